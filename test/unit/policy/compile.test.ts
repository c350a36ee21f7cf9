import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../../helpers/cli.js';
import { parsePolicy } from '../../../src/policy/parse.js';
import { compilePolicy, parseSetName, hostSetName, categorySetName } from '../../../src/policy/compile.js';
import { appDirectoryFromList } from '../../../src/policy/apps.js';
import { nftApplyDocument, nftText } from '../../../src/policy/nft.js';
import { iptablesText, sengMatchesOfLine, parseSengMatch } from '../../../src/policy/iptables.js';
import { PolicyError } from '../../../src/policy/errors.js';
import { parseCidr } from '../../../src/util/ipv4.js';

const fixtures = join(repoRoot, 'test', 'fixtures', 'policy');
const A = 'a'.repeat(64);
const B = 'b'.repeat(63) + '1';
const apps = appDirectoryFromList([
  { name: 'builder', mrEnclave: A },
  { name: 'builder', mrEnclave: B },
]);

/** Compares with a golden file; SENG_UPDATE_GOLDEN=1 rewrites it. */
function golden(name: string, actual: string): void {
  const path = join(fixtures, name);
  if (process.env.SENG_UPDATE_GOLDEN === '1' || !existsSync(path)) writeFileSync(path, actual);
  assert.equal(actual, readFileSync(path, 'utf8'), `output differs from golden file ${name}`);
}

function load(name: string) {
  const file = join(fixtures, name);
  return compilePolicy(parsePolicy(readFileSync(file, 'utf8'), `test/fixtures/policy/${name}`), { apps });
}

test('golden: spec sample → nft text, nft JSON, iptables', () => {
  const c = load('spec-sample.yaml');
  golden('spec-sample.nft', nftText(c));
  golden('spec-sample.nft.json', `${JSON.stringify(nftApplyDocument(c), null, 2)}\n`);
  golden('spec-sample.iptables', iptablesText(c));
});

test('golden: mixed policy (lists, negations, multi-measurement app) → nft and iptables', () => {
  const c = load('mixed.yaml');
  golden('mixed.nft', nftText(c));
  golden('mixed.nft.json', `${JSON.stringify(nftApplyDocument(c), null, 2)}\n`);
  golden('mixed.iptables', iptablesText(c, { jumps: true }));
  // A positive multi-measurement name expands to one rule per measurement; the negated
  // one becomes a conjunction in each.
  const variants = c.rules.filter((r) => r.name === 'two-builds');
  assert.equal(variants.length, 2);
  for (const v of variants) {
    assert.equal(v.seng.filter((s) => s.kind === 'app' && s.side === 'dst' && s.negate).length, 2);
  }
});

test('iptables output uses the original -m seng option syntax, in the original order', () => {
  for (const name of ['spec-sample.yaml', 'mixed.yaml']) {
    const text = iptablesText(load(name));
    let seen = 0;
    for (const line of text.split('\n').filter((l) => l.startsWith('-A '))) {
      for (const opts of sengMatchesOfLine(line)) {
        seen += 1;
        const order = ['src-app', 'dst-app', 'src-cat', 'dst-cat', 'src-host', 'dst-host'];
        const idx = opts.map((o) => order.indexOf(`${o.side}-${o.kind}`));
        assert.deepEqual(
          idx,
          [...idx].sort((a, b) => a - b),
          `option order in: ${line}`,
        );
      }
    }
    assert.ok(seen > 0);
  }
  const spec = iptablesText(load('spec-sample.yaml'));
  assert.match(spec, /-m seng ! --src-host 10\.0\.0\.0\/8 /);
  assert.match(spec, /-m seng --src-cat Browser /);
});

test('the -m seng parser enforces the extension rules', () => {
  assert.deepEqual(parseSengMatch(['!', '--src-host', '10.1.2.3']), [
    { side: 'src', kind: 'host', negate: true, value: '10.1.2.3/32' },
  ]);
  assert.throws(() => parseSengMatch([]), /at least one/);
  assert.throws(() => parseSengMatch(['--src-app', 'abc']), /64 hex/);
  assert.throws(() => parseSengMatch(['--src-cat', 'A', '--src-cat', 'B']), /twice/);
  assert.throws(() => parseSengMatch(['--src-cat', 'x'.repeat(21)]), /bad category/);
  assert.throws(() => parseSengMatch(['--bogus', 'x']), /unknown option/);
  assert.throws(() => parseSengMatch(['--dst-host', '10.0.0.0/33']), /bad address/);
});

test('app names need a database; unknown names are reported at their line', () => {
  const p = parsePolicy(
    'version: 1\nrules:\n  - name: a\n    chain: input\n    action: drop\n    src-app: nginx\n',
    'x.yaml',
  );
  assert.throws(
    () => compilePolicy(p),
    (e: unknown) => e instanceof PolicyError && e.issues[0]?.line === 6 && /need a database/.test(e.message),
  );
  assert.throws(() => compilePolicy(p, { apps }), /no app named "nginx"/);
});

test('set names are derived from content and parse back', () => {
  assert.equal(hostSetName(parseCidr('10.0.0.0/8')), 'host_10_0_0_0_8');
  assert.deepEqual(parseSetName('host_10_0_0_0_8'), {
    kind: 'host',
    name: 'host_10_0_0_0_8',
    cidr: parseCidr('10.0.0.0/8'),
  });
  assert.equal(categorySetName('Browser'), 'cat_Browser');
  const odd = categorySetName('web-2.0');
  assert.match(odd, /^catx_[0-9a-f]+$/);
  assert.deepEqual(parseSetName(odd), { kind: 'cat', name: odd, category: 'web-2.0' });
  assert.equal(parseSetName(`app_${A}`)?.kind, 'app');
  assert.equal(parseSetName('host_10_0_0_1_8'), undefined); // host bits set: not ours
  assert.equal(parseSetName('mine'), undefined);
});

test('the apply document keeps live sets, deletes obsolete seng sets only, flushes chains before rules', () => {
  const c = load('spec-sample.yaml');
  const doc = nftApplyDocument(c, { liveSets: ['enclaves', 'cat_Old', 'admin_set'] });
  const ops = doc.nftables.map(
    (x) => `${Object.keys(x)[0]} ${Object.keys(Object.values(x)[0] as object)[0]}`,
  );
  assert.ok(ops.indexOf('flush chain') < ops.indexOf('add rule'));
  const deletes = doc.nftables.filter((x) => 'delete' in x);
  assert.deepEqual(deletes, [{ delete: { set: { family: 'ip', table: 'seng', name: 'cat_Old' } } }]);
  assert.ok(
    !doc.nftables.some((x) => 'flush' in x && 'set' in (x.flush as object)),
    'sets are never flushed by apply',
  );
});
