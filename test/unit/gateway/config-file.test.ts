/** The serve configuration file: parsing with positions, validation, merging with flags. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  SERVE_FILE_KEYS,
  diffOptions,
  mergeOptions,
  parseServeConfig,
} from '../../../src/gateway/config-file.js';
import Serve from '../../../src/cli/commands/serve.js';

test('a complete file parses into typed options', () => {
  const { options, issues } = parseServeConfig(`listen: 10.0.0.1
port: 4000
cert: [/etc/seng/a.crt, /etc/seng/b.crt]
key:
  - /etc/seng/a.key
  - /etc/seng/b.key
db: /var/lib/seng/nf.db
nft: true
policy: /etc/seng/policy.yaml
idle-timeout: 300
allow-status: GROUP_OUT_OF_DATE
shadow-backend: iptables
log-level: debug
`);
  assert.deepEqual(issues, []);
  assert.deepEqual(options, {
    listen: '10.0.0.1',
    port: 4000,
    cert: ['/etc/seng/a.crt', '/etc/seng/b.crt'],
    key: ['/etc/seng/a.key', '/etc/seng/b.key'],
    db: '/var/lib/seng/nf.db',
    nft: true,
    policy: '/etc/seng/policy.yaml',
    'idle-timeout': 300,
    'allow-status': ['GROUP_OUT_OF_DATE'],
    'shadow-backend': 'iptables',
    'log-level': 'debug',
  });
});

test('an empty file sets nothing', () => {
  assert.deepEqual(parseServeConfig(''), { options: {}, issues: [] });
});

test('every problem is reported with line and column, not only the first', () => {
  const { issues } = parseServeConfig(`listen: 10.0.0.300
port: 70000
idle-timeout: soon
bogus: 1
nft: yes please
`);
  const at = issues.map((i) => `${i.line}:${i.column} ${i.key}`);
  assert.deepEqual(at, ['1:9 listen', '2:7 port', '3:15 idle-timeout', '4:1 bogus', '5:6 nft']);
  assert.match(issues[1]!.message, /from 1 to 65534, got 70000/);
  assert.match(issues[3]!.message, /unknown option "bogus"/);
});

test('YAML syntax errors and duplicate keys carry positions', () => {
  const dup = parseServeConfig('tun: a\ntun: b\n').issues;
  assert.equal(dup.length, 1);
  assert.equal(dup[0]!.line, 2);
  const broken = parseServeConfig('cert: [a, b\n').issues;
  assert.ok(broken.length >= 1 && broken[0]!.line >= 1);
});

test('options that need each other are checked as the flags do', () => {
  const keys = (text: string) => parseServeConfig(text).issues.map((i) => i.key);
  assert.deepEqual(keys('netfilter: true\n'), ['netfilter']);
  assert.deepEqual(keys('policy: /p.yaml\n'), ['policy']);
  assert.deepEqual(keys('nft: true\nnetfilter: true\ndb: x\n'), ['nft']);
  assert.deepEqual(keys('cert: [a, b]\nkey: [a]\n'), ['key']);
  assert.deepEqual(keys('listen: 0.0.0.0\n'), ['listen']);
  assert.deepEqual(keys('nft: true\npolicy: /p.yaml\nnetfilter: false\n'), []);
});

test('a document that is not a mapping is refused', () => {
  assert.match(parseServeConfig('- a\n- b\n').issues[0]!.message, /mapping/);
});

test('the file knows every serve flag (and only those, plus listen/port)', () => {
  const flagNames = [...Object.keys(Serve.flags), 'log-level'].filter((n) => n !== 'config').sort();
  const fileKeys = Object.keys(SERVE_FILE_KEYS)
    .filter((k) => k !== 'listen' && k !== 'port')
    .sort();
  assert.deepEqual(fileKeys, flagNames);
});

test('flags override the file, the file overrides the defaults', () => {
  const merged = mergeOptions(
    { tun: 'tunFA', 'idle-timeout': 120, port: 12345 },
    { tun: 'tunX', 'idle-timeout': 300 },
    { 'idle-timeout': 60 },
  );
  assert.deepEqual(merged, { tun: 'tunX', 'idle-timeout': 60, port: 12345 });
});

test('diffOptions lists exactly the changed keys', () => {
  const d = diffOptions(
    { tun: 'a', cert: ['x'], 'idle-timeout': 1 },
    { tun: 'a', cert: ['y'], 'idle-timeout': 1, policy: 'p' },
  );
  // In the order of SERVE_FILE_KEYS.
  assert.deepEqual(
    d.map((c) => c.key),
    ['policy', 'cert'],
  );
});
