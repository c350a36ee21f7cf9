/**
 * Golden bytes of the four seng request kinds, derived by hand from SPEC §5.1.
 *
 * Derivation rules (Linux generic netlink, little-endian host as on x86-64 / arm64):
 * - genlmsghdr: u8 cmd = GENL_XT_SENG_MSG = 1, u8 version = 1, u16 reserved = 0  → 01 01 00 00
 * - nlattr: u16 nla_len (4-byte header + payload, *without* padding), u16 nla_type, payload,
 *   zero padding up to a multiple of 4 — both u16 in host order (little-endian).
 * - APP = 1 (32 bytes), CAT = 2 (string + NUL, ≤ 20 chars), HOST = 3 and ENC = 4 (u32 whose
 *   bytes are the IPv4 address in network order, i.e. 192.168.28.2 → c0 a8 1c 02),
 *   ADD = 5, RMV = 6, FLUSH = 7 (flags: header only, nla_len = 4).
 * - Our attribute order is ascending attribute number.
 * - nlmsghdr (16 bytes, host order): u32 len (header + payload), u16 type = family id,
 *   u16 flags = NLM_F_REQUEST (1) | NLM_F_ACK (4) = 5, u32 seq, u32 port id.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { endianness } from 'node:os';
import {
  encodeCategory,
  encodeFlush,
  encodeRegister,
  encodeUnregister,
  parseAppHex,
  sengNlmsg,
  validateCategory,
} from '../../../kmod-bridge/index.js';
import { InputError } from '../../../src/util/errors.js';
import { parseIpv4 } from '../../../src/util/ipv4.js';

/** Hex bytes of a template: on each line, the leading run of hex-byte tokens; the rest is commentary. */
function hex(text: string): Buffer {
  const bytes: string[] = [];
  for (const line of text.split('\n')) {
    for (const tok of line.trim().split(/\s+/)) {
      if (!/^([0-9a-f]{2})+$/i.test(tok)) break;
      bytes.push(tok);
    }
  }
  return Buffer.from(bytes.join(''), 'hex');
}
/** App 00 01 02 … 1f. */
const APP = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
const APP_HEX = APP.toString('hex');
const ENC = parseIpv4('192.168.28.2');
const HOST = parseIpv4('127.0.0.1');

describe(
  'seng request encoding (golden bytes)',
  { skip: endianness() !== 'LE' && 'golden bytes are for little-endian hosts' },
  () => {
    it('flush: genl header + FLUSH flag', () => {
      assert.deepEqual(
        encodeFlush(),
        hex(`
        01 01 00 00      genl: cmd 1, version 1, reserved
        04 00 07 00      FLUSH: len 4, type 7, no payload`),
      );
    });

    it('flush as a full netlink message', () => {
      // len = 16 + 8 = 24 = 0x18; type = family id 0x1c; flags = 5; seq 0x01020304; port 0x0a0b0c0d
      assert.deepEqual(
        sengNlmsg(0x1c, 0x01020304, 0x0a0b0c0d, encodeFlush()),
        hex(`
        18 00 00 00  1c 00  05 00  04 03 02 01  0d 0c 0b 0a
        01 01 00 00  04 00 07 00`),
      );
    });

    it('unregister: ENC (network-order u32) + RMV', () => {
      assert.deepEqual(
        encodeUnregister(ENC),
        hex(`
        01 01 00 00
        08 00 04 00  c0 a8 1c 02    ENC: len 8, type 4, 192.168.28.2
        04 00 06 00                 RMV`),
      );
    });

    it('register: APP, HOST, ENC, ADD', () => {
      assert.deepEqual(
        encodeRegister({ enclaveIp: ENC, mrEnclave: APP, hostIp: HOST }),
        hex(`
        01 01 00 00
        24 00 01 00  ${APP_HEX}     APP: len 36 = 0x24, type 1, 32 bytes
        08 00 03 00  7f 00 00 01    HOST: 127.0.0.1
        08 00 04 00  c0 a8 1c 02    ENC: 192.168.28.2
        04 00 05 00                 ADD`),
      );
    });

    it('register with a category: CAT padded to 4 bytes', () => {
      // "Demo" + NUL = 5 bytes, nla_len = 9, padded with 3 zero bytes to 12.
      assert.deepEqual(
        encodeRegister({ enclaveIp: ENC, mrEnclave: APP, hostIp: HOST, category: 'Demo' }),
        hex(`
        01 01 00 00
        24 00 01 00  ${APP_HEX}
        09 00 02 00  44 65 6d 6f 00 00 00 00
        08 00 03 00  7f 00 00 01
        08 00 04 00  c0 a8 1c 02
        04 00 05 00`),
      );
    });

    it('category add / remove: APP, CAT, ADD|RMV', () => {
      // "Browser" + NUL = 8 bytes, nla_len = 12, no padding.
      const cat = '0c 00 02 00  42 72 6f 77 73 65 72 00';
      assert.deepEqual(
        encodeCategory('add', APP, 'Browser'),
        hex(`01 01 00 00  24 00 01 00 ${APP_HEX}  ${cat}  04 00 05 00`),
      );
      assert.deepEqual(
        encodeCategory('remove', APP, 'Browser'),
        hex(`01 01 00 00  24 00 01 00 ${APP_HEX}  ${cat}  04 00 06 00`),
      );
    });

    it('a 20-character category is the maximum: nla_len 25, 3 bytes of padding', () => {
      const name = 'abcdefghijklmnopqrst';
      assert.deepEqual(
        encodeCategory('add', APP, name),
        hex(
          `01 01 00 00  24 00 01 00 ${APP_HEX}  19 00 02 00 ${Buffer.from(name).toString('hex')} 00 000000  04 00 05 00`,
        ),
      );
    });
  },
);

describe('seng request validation', () => {
  it('rejects categories the module cannot hold or match', () => {
    assert.throws(() => encodeCategory('add', APP, 'abcdefghijklmnopqrstu'), InputError); // 21 characters
    assert.throws(() => encodeCategory('add', APP, ''), InputError);
    assert.throws(() => validateCategory('Web Server'), InputError);
    assert.throws(() => validateCategory('Café'), InputError);
    assert.throws(() => validateCategory('a\0b'), InputError);
    assert.throws(
      () => encodeRegister({ enclaveIp: ENC, mrEnclave: APP, hostIp: HOST, category: 'x'.repeat(21) }),
      InputError,
    );
    assert.equal(validateCategory('Server-1.v2_x'), 'Server-1.v2_x');
  });

  it('rejects an app measurement that is not 32 bytes', () => {
    assert.throws(() => encodeCategory('add', APP.subarray(0, 31), 'Demo'), InputError);
    assert.throws(
      () => encodeRegister({ enclaveIp: ENC, mrEnclave: Buffer.alloc(33), hostIp: HOST }),
      InputError,
    );
    assert.throws(() => parseAppHex('abc'), InputError);
    assert.throws(() => parseAppHex('zz'.repeat(32)), InputError);
    assert.deepEqual(parseAppHex(APP_HEX.toUpperCase()), APP);
  });

  it('rejects enclave IP 0.0.0.0 and out-of-range numbers', () => {
    assert.throws(() => encodeUnregister(0), InputError);
    assert.throws(() => encodeRegister({ enclaveIp: 0, mrEnclave: APP, hostIp: HOST }), InputError);
    assert.throws(() => encodeUnregister(2 ** 32), InputError);
    assert.throws(() => encodeUnregister(-1), InputError);
  });
});
