/**
 * The handshake pacer: concurrent handshakes start at the floor, grow while handshakes finish
 * fast, shrink (once per period, never below the floor) when they take longer than the target
 * while the event loop is saturated, and never exceed maxHandshakes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HandshakePacer } from '../../../src/dtls/pacer.js';

function pacer(max: number, floor?: number) {
  let now = 0;
  let busy = 1;
  const p = new HandshakePacer({
    max,
    targetMs: 1000,
    ...(floor === undefined ? {} : { floor }),
    now: () => now,
    busy: () => busy,
  });
  return { p, advance: (ms: number) => (now += ms), setBusy: (b: number) => (busy = b) };
}

test('a burst starts at the floor, not with every slot', () => {
  assert.equal(pacer(512).p.limit, 32);
  assert.equal(pacer(10).p.limit, 10, 'the floor is at most maxHandshakes');
  assert.equal(pacer(512, 8).p.limit, 8);
});

test('fast handshakes raise the limit up to maxHandshakes, middling ones leave it', () => {
  const { p } = pacer(40);
  for (let i = 0; i < 5; i++) p.finished(100);
  assert.equal(p.limit, 37);
  p.finished(700); // between half the target and the target: no change
  assert.equal(p.limit, 37);
  for (let i = 0; i < 20; i++) p.finished(100);
  assert.equal(p.limit, 40);
});

test('slow handshakes cut the limit by a quarter once per target period, not below the floor', () => {
  const { p, advance } = pacer(512);
  for (let i = 0; i < 200; i++) p.finished(10);
  assert.equal(p.limit, 232);
  p.finished(1500);
  assert.equal(p.limit, 174);
  p.finished(1500); // started together with the first slow one: no second cut yet
  assert.equal(p.limit, 174);
  advance(1000);
  p.finished(1500);
  assert.equal(p.limit, 130);
  for (let i = 0; i < 10; i++) {
    advance(1000);
    p.finished(5000);
  }
  assert.equal(p.limit, 32);
});

test('slow handshakes while the event loop has time to spare do not hold new peers back', () => {
  const { p, setBusy } = pacer(100, 8);
  for (let i = 0; i < 20; i++) p.finished(10);
  assert.equal(p.limit, 28);
  setBusy(0.4); // slowed by the clients or the network, not by this server
  p.finished(5000);
  assert.equal(p.limit, 29);
  p.finished(700);
  assert.equal(p.limit, 30);
  setBusy(0.95);
  p.finished(5000);
  assert.equal(p.limit, 22);
});
