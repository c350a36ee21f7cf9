/** The simulator's cipher choice (SPEC §1.1) and its keepalive packet. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SIM_CIPHERS, cipherForGatewayCert, icmpEchoRequest } from '../../../src/sim/enclave.js';
import {
  internetChecksum,
  ipv4Destination,
  ipv4HeaderChecksumOk,
  ipv4Source,
  isIcmpEchoRequest,
} from '../../../src/tunnel/index.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';

function selfSigned(keyArgs: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'seng-simunit-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        ...keyArgs,
        '-nodes',
        '-keyout',
        join(dir, 'k'),
        '-out',
        join(dir, 'c'),
        '-subj',
        '/CN=t',
        '-days',
        '1',
      ],
      { stdio: 'ignore' },
    );
    return readFileSync(join(dir, 'c'), 'utf8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('the offered suite follows the pinned key type; both pins offer both', () => {
  const rsa = selfSigned(['-newkey', 'rsa:2048']);
  const ec = selfSigned(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']);
  assert.equal(cipherForGatewayCert(rsa), SIM_CIPHERS.rsa);
  assert.equal(cipherForGatewayCert(ec), SIM_CIPHERS.ec);
  assert.equal(cipherForGatewayCert(rsa + ec), `${SIM_CIPHERS.rsa}:${SIM_CIPHERS.ec}`);
  assert.throws(() => cipherForGatewayCert('not a certificate'), { code: 'ESIM' });
  assert.throws(
    () => cipherForGatewayCert('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'),
    { code: 'ESIM' },
  );
});

test('the keepalive is a valid ICMP echo request from the enclave IP to the gateway IP', () => {
  const src = parseIpv4('192.168.28.2');
  const dst = parseIpv4('192.168.28.1');
  const p = icmpEchoRequest(src, dst, 0x1234, 7);
  assert.ok(isIcmpEchoRequest(p));
  assert.ok(ipv4HeaderChecksumOk(p));
  assert.equal(internetChecksum(p, 20, p.length), 0, 'ICMP checksum');
  assert.equal(ipv4Source(p), src);
  assert.equal(ipv4Destination(p), dst);
  assert.equal(p.readUInt16BE(2), p.length);
});
