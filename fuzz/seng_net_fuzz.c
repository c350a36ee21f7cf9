/*
 * libFuzzer harness for native/common/seng_net.c: everything there parses packets that come
 * from the kernel (TUN reads) or from enclaves (DTLS records), so it must never read or write out
 * of bounds, and its outputs must be valid packets. Built with ASan + UBSan by fuzz/run.js.
 *
 * The first input byte picks a mode:
 *   0  raw frame -> seng_gso_split(); any success must give packets within `out`, and for a TCPv4
 *      GSO frame, valid IPv4/TCP packets of at most mtu bytes; for a UDP GSO frame, valid
 *      IPv4/UDP datagrams
 *   1  structured batch of TCP segments (a few flows, contiguous or not, valid or corrupt) ->
 *      seng_gro_add/_frame_iov; every merged frame must split back (seng_gso_split) into valid
 *      packets carrying exactly the merged payload, in sequence
 *      (with bit 2 of the first byte set: a batch of UDP datagrams of a few flows and sizes,
 *      some corrupt, without checksum or with another TTL; every merged frame must be a
 *      GSO_UDP_L4 frame whose payload, cut at gso_size, gives back exactly the merged datagrams'
 *      payloads, each of them valid, all but the last of gso_size bytes, and that
 *      seng_gso_split cuts back into the same datagrams)
 *   2  structured TSO super-packet -> seng_gso_split(); segments valid, payload and sequence
 *      numbers continuous, FIN/PSH only last, CWR only first
 *   3  raw bytes -> seng_ipv4_check / checksum helpers (bounds only), and a UDP GRO read length
 *      and gso_size from the first bytes -> seng_udp_gro_split(): the datagrams must tile the
 *      read exactly, each gso_size bytes but a last one of 1..gso_size
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "seng_net.h"

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) __builtin_trap();                                                                 \
  } while (0)

static uint8_t out[SENG_GSO_SPLIT_ROOM];
static uint32_t ends[SENG_GSO_MAX_SEGS];

static uint16_t rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static uint32_t rd32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static void wr16(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static void wr32(uint8_t *p, uint32_t v) {
  wr16(p, v >> 16);
  wr16(p + 2, v);
}

/* A byte reader over the fuzz input that yields zeros when exhausted. */
typedef struct {
  const uint8_t *p;
  size_t n;
} input;
static uint8_t take(input *in) {
  if (in->n == 0) return 0;
  in->n--;
  return *in->p++;
}
static uint16_t take16(input *in) { return (uint16_t)((take(in) << 8) | take(in)); }

/* Checks a split result: ends increasing and within `out`; then per kind: nothing more
 * (SPLIT_ANY), valid IPv4/TCP segments of at most mtu bytes (SPLIT_TCP), or valid IPv4/UDP
 * datagrams (SPLIT_UDP: the sender's sizes, so no MTU bound here). */
enum { SPLIT_ANY, SPLIT_TCP, SPLIT_UDP };

static void check_split(int n, size_t mtu, int kind) {
  uint32_t start = 0;
  for (int i = 0; i < n; i++) {
    CHECK(ends[i] > start && ends[i] <= sizeof out);
    const uint8_t *p = out + start;
    size_t len = ends[i] - start;
    if (kind != SPLIT_ANY) {
      CHECK(kind != SPLIT_TCP || len <= mtu);
      CHECK(seng_ipv4_check(p, len) == SENG_IPV4_OK);
      CHECK(rd16(p + 2) == len);
      CHECK(seng_ipv4_header_csum_ok(p));
      CHECK(seng_ipv4_l4_csum_ok(p, len));
      CHECK(kind != SPLIT_UDP || rd16(p + (size_t)(p[0] & 0x0f) * 4 + 4) == len - (size_t)(p[0] & 0x0f) * 4);
    }
    start = ends[i];
  }
}

/* Writes an IPv4 header (IHL 5, DF, TTL 64, 10.0.0.1 → 10.0.1.<flow & 1>) with its checksum. */
static void build_ipv4_header(uint8_t *p, uint8_t proto, size_t total, uint16_t id, uint8_t flow) {
  p[0] = 0x45;
  wr16(p + 2, (uint32_t)total);
  wr16(p + 4, id);
  wr16(p + 6, 0x4000);
  p[8] = 64;
  p[9] = proto;
  wr32(p + 12, 0x0a000001);
  wr32(p + 16, 0x0a000100 + (flow & 1));
  seng_ipv4_set_header_csum(p);
}

/* Builds an IPv4/TCP packet (IHL 5) with valid checksums into p; returns its length. */
static size_t build_tcp(uint8_t *p, uint8_t flow, uint32_t seq, uint32_t ack, uint8_t flags,
                        size_t opt_len, const uint8_t *payload, size_t plen, uint16_t id) {
  size_t thl = 20 + opt_len, total = 20 + thl + plen;
  memset(p, 0, 20 + thl);
  build_ipv4_header(p, 6, total, id, flow);
  uint8_t *t = p + 20;
  wr16(t, 1000 + (flow >> 1));
  wr16(t + 2, 80);
  wr32(t + 4, seq);
  wr32(t + 8, ack);
  t[12] = (uint8_t)((thl / 4) << 4);
  t[13] = flags;
  wr16(t + 14, 512);
  for (size_t i = 0; i < opt_len; i++) t[20 + i] = 1; /* NOPs */
  memcpy(t + thl, payload, plen);
  uint32_t s = seng_csum_add(seng_csum_pseudo4(p, 6, (uint32_t)(thl + plen)), t, thl + plen);
  wr16(t + 16, seng_csum_fold(s));
  return total;
}

/* Builds an IPv4/UDP datagram (IHL 5) with valid checksums into p; returns its length. */
static size_t build_udp(uint8_t *p, uint8_t flow, const uint8_t *payload, size_t plen, uint16_t id) {
  size_t total = 28 + plen;
  memset(p, 0, 28);
  build_ipv4_header(p, 17, total, id, flow);
  uint8_t *u = p + 20;
  wr16(u, 2000 + (flow >> 1));
  wr16(u + 2, 5201);
  wr16(u + 4, (uint32_t)(8 + plen));
  memcpy(u + 8, payload, plen);
  uint16_t c = seng_csum_fold(seng_csum_add(seng_csum_pseudo4(p, 17, (uint32_t)(8 + plen)), u, 8 + plen));
  wr16(u + 6, c == 0 ? 0xffff : c);
  return total;
}

static void fuzz_raw_split(input *in) {
  size_t mtu = 68 + take16(in) % 9000;
  int n = seng_gso_split(in->p, in->n, mtu, out, sizeof out, ends, SENG_GSO_MAX_SEGS);
  if (n <= 0) return;
  const uint8_t type = in->n > SENG_VNET_HDR_LEN ? (uint8_t)(in->p[1] & 0x7f) : 0;
  check_split(n, mtu, type == SENG_VNET_GSO_TCPV4 ? SPLIT_TCP : type == SENG_VNET_GSO_UDP_L4 ? SPLIT_UDP : SPLIT_ANY);
}

#define ARENA 200000
static uint8_t arena[ARENA];
static uint8_t payload_src[2048];

static void fuzz_udp_merge(input *in) {
  static seng_gro g;
  static struct iovec iov[1 + SENG_GRO_MAX_PKTS];
  static uint8_t frame[65536 + SENG_VNET_HDR_LEN];
  seng_gro_init(&g);
  for (size_t i = 0; i < sizeof payload_src; i++) payload_src[i] = (uint8_t)(i * 5 + 1);
  size_t used = 0;
  while (in->n >= 3 && g.npkts < SENG_GRO_MAX_PKTS) {
    uint8_t ctl = take(in), sz = take(in), idb = take(in);
    uint8_t flow = ctl & 3;
    size_t plen = (ctl & 0x04) ? 1000 : (ctl & 0x08) ? 64 : (size_t)sz * 5 + 1;
    if (plen > sizeof payload_src) plen = sizeof payload_src;
    if (used + 28 + plen > ARENA) break;
    uint8_t *p = arena + used;
    size_t len = build_udp(p, flow, payload_src + (idb & 7), plen, idb);
    if ((ctl & 0xe0) == 0x20) p[len - 1] ^= 0x5a;     /* corrupt: must not be merged */
    if ((ctl & 0xe0) == 0x40) wr16(p + 26, 0);        /* no checksum: must not be merged */
    if ((ctl & 0xe0) == 0x60) {                       /* another TTL: a frame of its own */
      p[8] = 63;
      seng_ipv4_set_header_csum(p);
    }
    used += len;
    CHECK(seng_gro_add(&g, p, len) == 0);
  }
  size_t frames = seng_gro_frames(&g), packets = 0;
  CHECK(frames <= g.npkts);
  for (size_t i = 0; i < frames; i++) {
    const seng_gro_frame *f = &g.frames[i];
    size_t flen = 0;
    int n = seng_gro_frame_iov(&g, i, iov, 1 + SENG_GRO_MAX_PKTS, &flen);
    CHECK(n >= 2 && flen <= sizeof frame);
    size_t off = 0;
    for (int k = 0; k < n; k++) {
      CHECK(off + iov[k].iov_len <= sizeof frame);
      memcpy(frame + off, iov[k].iov_base, iov[k].iov_len);
      off += iov[k].iov_len;
    }
    CHECK(off == flen);
    packets += f->count;
    const uint8_t *ip = frame + SENG_VNET_HDR_LEN;
    if (frame[1] != SENG_VNET_GSO_UDP_L4) {
      CHECK(frame[1] == SENG_VNET_GSO_NONE && f->count == 1);
      CHECK(memcmp(ip, g.pkts[f->first].data, g.pkts[f->first].len) == 0);
      continue;
    }
    CHECK(f->count >= 2 && f->count <= SENG_GRO_UDP_MAX_SEGS);
    uint16_t gso_size, hdr_len;
    memcpy(&hdr_len, frame + 2, 2);
    memcpy(&gso_size, frame + 4, 2);
    size_t total = flen - SENG_VNET_HDR_LEN;
    CHECK(hdr_len == 28 && gso_size > 0 && total <= 0xffff && rd16(ip + 2) == total);
    CHECK(seng_ipv4_header_csum_ok(ip) && rd16(ip + 24) == total - 20);
    /* Cut at gso_size, the payload is the merged datagrams' payloads, each of them valid. */
    size_t pos = 28;
    int k = 0;
    for (int16_t pi = f->first; pi >= 0; pi = g.pkts[pi].next, k++) {
      const seng_gro_pkt *pk = &g.pkts[pi];
      size_t dl = pk->len - 28;
      CHECK(seng_ipv4_l4_csum_ok(pk->data, pk->len) && rd16(pk->data + 26) != 0);
      CHECK(pk->data[8] == ip[8] && memcmp(pk->data + 12, ip + 12, 12) == 0);
      CHECK(pk->next < 0 ? dl <= gso_size : dl == gso_size);
      CHECK(pos + dl <= total && memcmp(ip + pos, pk->data + 28, dl) == 0);
      pos += dl;
    }
    CHECK(k == f->count && pos == total);
    /* The kernel -> us direction (seng_gso_split) cuts it back into the same datagrams. */
    int segs = seng_gso_split(frame, flen, 65535, out, sizeof out, ends, SENG_GSO_MAX_SEGS);
    CHECK(segs == (int)f->count);
    check_split(segs, 65535, SPLIT_UDP);
    uint32_t start = 0;
    k = 0;
    for (int16_t pi = f->first; pi >= 0; pi = g.pkts[pi].next, k++) {
      const seng_gro_pkt *pk = &g.pkts[pi];
      CHECK(ends[k] - start == pk->len);
      /* Ports, UDP length, checksum and payload as sent (IP id and header checksum may differ). */
      CHECK(memcmp(out + start + 20, pk->data + 20, pk->len - 20) == 0);
      start = ends[k];
    }
  }
  CHECK(packets == g.npkts);
}

static void fuzz_gro(input *in) {
  static seng_gro g;
  static struct iovec iov[1 + SENG_GRO_MAX_PKTS];
  static uint8_t frame[65536 + SENG_VNET_HDR_LEN];
  seng_gro_init(&g);
  for (size_t i = 0; i < sizeof payload_src; i++) payload_src[i] = (uint8_t)(i * 7 + 3);
  uint32_t next[4] = {1000, 5000, 9000, 13000};
  size_t used = 0;
  while (in->n >= 4 && g.npkts < SENG_GRO_MAX_PKTS) {
    uint8_t ctl = take(in), sz = take(in), var = take(in), idb = take(in);
    uint8_t flow = ctl & 3;
    size_t plen = (var & 0x80) ? 1380 : (size_t)sz * 6;
    uint32_t seq = next[flow];
    if (var & 0x40) seq += 100;              /* a gap */
    if ((var & 0x30) == 0x30) seq -= 50;     /* an overlap */
    uint8_t flags = 0x10;
    if ((ctl >> 2) & 1) flags |= 0x08; /* PSH */
    if (((ctl >> 3) & 7) == 7) flags |= 0x01; /* FIN */
    if (((ctl >> 3) & 7) == 6) flags = 0x02; /* SYN */
    size_t opt = (ctl & 0x40) ? 12 : 0;
    uint32_t ack = (var & 0x08) ? 2 : 1;
    if (used + 20 + 20 + opt + plen > ARENA) break;
    uint8_t *p = arena + used;
    size_t len = build_tcp(p, flow, seq, ack, flags, opt, payload_src, plen, idb);
    if (ctl & 0x80 && var & 1) p[len - 1] ^= 0x5a; /* corrupt: must not be merged */
    used += len;
    next[flow] = seq + (uint32_t)plen;
    CHECK(seng_gro_add(&g, p, len) == 0);
  }
  size_t frames = seng_gro_frames(&g);
  CHECK(frames <= g.npkts);
  size_t packets = 0;
  for (size_t i = 0; i < frames; i++) {
    size_t flen = 0;
    int n = seng_gro_frame_iov(&g, i, iov, 1 + SENG_GRO_MAX_PKTS, &flen);
    CHECK(n >= 2 && flen <= sizeof frame);
    size_t off = 0;
    for (int k = 0; k < n; k++) {
      CHECK(off + iov[k].iov_len <= sizeof frame);
      memcpy(frame + off, iov[k].iov_base, iov[k].iov_len);
      off += iov[k].iov_len;
    }
    CHECK(off == flen);
    packets += g.frames[i].count;
    if (frame[1] != SENG_VNET_GSO_TCPV4) {
      CHECK(g.frames[i].count == 1);
      continue;
    }
    /* A merged frame: what the kernel will do with it must give valid, continuous segments. */
    CHECK(g.frames[i].count >= 2);
    uint16_t gso_size;
    memcpy(&gso_size, frame + 4, 2);
    size_t hl = g.frames[i].hdr_len;
    int segs = seng_gso_split(frame, flen, hl + gso_size, out, sizeof out, ends, SENG_GSO_MAX_SEGS);
    CHECK(segs == g.frames[i].count);
    check_split(segs, hl + gso_size, SPLIT_TCP);
    uint32_t seq = rd32(frame + SENG_VNET_HDR_LEN + 24), start = 0;
    for (int k = 0; k < segs; k++) {
      CHECK(rd32(out + start + 24) == seq);
      seq += ends[k] - start - (uint32_t)hl;
      start = ends[k];
    }
  }
  CHECK(packets == g.npkts);
}

static void fuzz_tso(input *in) {
  static uint8_t big_payload[65536];
  if (big_payload[1] == 0)
    for (size_t i = 0; i < sizeof big_payload; i++) big_payload[i] = (uint8_t)(i * 13 + 1);
  uint8_t *f = arena;
  size_t opt = (take(in) & 0x0f) * 4 % 44;
  size_t plen = take16(in) % (65535 - 40 - 44);
  uint16_t gso_size = take16(in);
  size_t mtu = 68 + take16(in) % 1500;
  uint8_t flags = take(in) | 0x10;
  flags &= (uint8_t)~0x06; /* no SYN/RST in bulk data */
  uint32_t seq = (uint32_t)take16(in) << 16 | take16(in);
  size_t len = build_tcp(f + SENG_VNET_HDR_LEN, 0, seq, 1, flags, opt, big_payload, plen, take16(in));
  seng_vnet_hdr h = {SENG_VNET_F_NEEDS_CSUM, SENG_VNET_GSO_TCPV4, (uint16_t)(40 + opt), gso_size, 20, 16};
  seng_vnet_hdr_write(f, &h);
  int n = seng_gso_split(f, SENG_VNET_HDR_LEN + len, mtu, out, sizeof out, ends, SENG_GSO_MAX_SEGS);
  if (n <= 0) return;
  check_split(n, mtu, SPLIT_TCP);
  uint32_t start = 0, s = seq;
  size_t hl = 40 + opt, carried = 0;
  for (int k = 0; k < n; k++) {
    const uint8_t *p = out + start;
    uint8_t fl = p[33];
    CHECK(rd32(p + 24) == s);
    CHECK(!(fl & 0x01) || k == n - 1);
    CHECK(!(fl & 0x08) || k == n - 1);
    CHECK(!(fl & 0x80) || k == 0);
    size_t pl = ends[k] - start - hl;
    CHECK(pl <= gso_size);
    CHECK(memcmp(p + hl, f + SENG_VNET_HDR_LEN + hl + carried, pl) == 0);
    carried += pl;
    s += (uint32_t)pl;
    start = ends[k];
  }
  CHECK(carried == plen);
}

static uint32_t gro_ends[SENG_UDP_GRO_MAX_SEGS];

static void fuzz_udp_gro(const input *in) {
  if (in->n < 7) return;
  const size_t len = ((size_t)(in->p[0] & 1) << 16) | rd16(in->p + 1);
  const int gso = (int)rd32(in->p + 3);
  const size_t cap = 1 + (size_t)(in->n > 7 ? in->p[7] : 255) % SENG_UDP_GRO_MAX_SEGS;
  const int n = seng_udp_gro_split(len, gso, gro_ends, cap);
  if (n < 0) {
    CHECK(n == -EINVAL || n == -E2BIG);
    return;
  }
  CHECK(n >= 1 && (size_t)n <= cap && len > 0 && len <= 65535 && gso >= 0);
  const size_t seg = gso == 0 ? len : (size_t)gso;
  size_t start = 0;
  for (int k = 0; k < n; k++) {
    CHECK(gro_ends[k] > start && gro_ends[k] <= len);
    const size_t dlen = gro_ends[k] - start;
    CHECK(k == n - 1 ? dlen <= seg : dlen == seg);
    start = gro_ends[k];
  }
  CHECK(start == len);
}

static void fuzz_checks(input *in) {
  fuzz_udp_gro(in);
  int c = seng_ipv4_check(in->p, in->n);
  if (c == SENG_IPV4_OK) {
    (void)seng_ipv4_header_csum_ok(in->p);
  }
  (void)seng_ipv4_l4_csum_ok(in->p, in->n);
  (void)seng_csum_add(0, in->p, in->n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  input in = {data + 1, size - 1};
  switch (data[0] & 3) {
    case 0: fuzz_raw_split(&in); break;
    case 1:
      if (data[0] & 4) fuzz_udp_merge(&in);
      else fuzz_gro(&in);
      break;
    case 2: fuzz_tso(&in); break;
    default: fuzz_checks(&in); break;
  }
  return 0;
}
