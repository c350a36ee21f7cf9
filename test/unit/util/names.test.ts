/**
 * One category-name rule (issue #17): the database, policy files and the kernel-module
 * bridge accept exactly the same names, so a policy cannot name a category that can
 * never be filled.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { categoryNameProblem, validateCategory, CATEGORY_MAX } from '../../../src/util/names.js';
import { validateCategory as storeValidate } from '../../../src/store/validate.js';
import { validateCategory as kmodValidate } from '../../../kmod-bridge/seng.js';
import { parsePolicy } from '../../../src/policy/parse.js';
import { PolicyError } from '../../../src/policy/errors.js';

const GOOD = ['Web', 'Server-1.v2_x', 'a', 'x'.repeat(CATEGORY_MAX), 'Demo', 'web-2.0'];
const BAD = [
  '',
  'x'.repeat(CATEGORY_MAX + 1),
  'a:b',
  'a+b',
  'a@b',
  'Web Server',
  'Café',
  'a"b',
  'a\0b',
  'a/b',
];

function policyAccepts(name: string): boolean {
  const text = `version: 1\nrules:\n  - { name: r, chain: forward, action: accept, src-cat: ${JSON.stringify(name)} }\n`;
  try {
    const p = parsePolicy(text);
    assert.equal(p.rules[0]?.srcCat?.value, name);
    return true;
  } catch (e) {
    assert.ok(e instanceof PolicyError, String(e));
    assert.match(e.message, /category/);
    return false;
  }
}

function accepts(fn: (n: string) => string, name: string): boolean {
  try {
    assert.equal(fn(name), name);
    return true;
  } catch {
    return false;
  }
}

test('the database, policies and the kernel-module bridge share one category rule', () => {
  for (const name of [...GOOD, ...BAD]) {
    const expected = GOOD.includes(name);
    const label = JSON.stringify(name);
    assert.equal(categoryNameProblem(name) === undefined, expected, `rule: ${label}`);
    assert.equal(accepts(validateCategory, name), expected, `util: ${label}`);
    assert.equal(accepts(storeValidate, name), expected, `database: ${label}`);
    assert.equal(accepts(kmodValidate, name), expected, `kernel module: ${label}`);
    if (name !== '' && !name.includes('\0')) assert.equal(policyAccepts(name), expected, `policy: ${label}`);
  }
});

test('the error says what is wrong', () => {
  assert.match(categoryNameProblem('x'.repeat(21)) ?? '', /it has 21; the kernel module holds at most 20/);
  assert.match(categoryNameProblem('a:b') ?? '', /A-Z a-z 0-9 _ \. -/);
  assert.throws(() => validateCategory('a b'), { code: 'EINPUT' });
});
