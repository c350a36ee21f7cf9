import { test } from 'node:test';
import assert from 'node:assert/strict';
import { interfaceNameProblem, validateInterfaceName } from '../../../src/util/names.js';
import { checkInterfaceName } from '../../../src/shadow/rules.js';

test('one interface-name rule: what the kernel takes, narrowed to characters that need no quoting', () => {
  for (const ok of ['tunFA', 'eth0', 'veth-a.1', 'br_lan', 'x@y', 'a'.repeat(15)]) {
    assert.equal(interfaceNameProblem(ok), undefined, ok);
    assert.equal(checkInterfaceName(ok), ok, 'the shadow takes every name serve --tun takes');
  }
  // ':' is an alias suffix the kernel refuses; '/' and spaces likewise; 16+ bytes exceed IFNAMSIZ.
  for (const bad of ['', '.', '..', 'eth0:1', 'a/b', 'eth 0', 'a'.repeat(16), 'tun;x', 'tün0', 'tun%d']) {
    assert.match(
      interfaceNameProblem(bad) ?? 'accepted',
      /is not a network interface name/,
      JSON.stringify(bad),
    );
    assert.throws(() => checkInterfaceName(bad), /not a network interface name/);
  }
  assert.equal(
    validateInterfaceName('tun%d', { template: true }),
    'tun%d',
    'only device creation takes a template',
  );
  assert.equal(checkInterfaceName('any'), 'any');
});
