/*
 * seng_net: IPv4 checks, checksums, TSO segmentation and TCP coalescing for TUN devices with
 * IFF_VNET_HDR. See seng_net.h for the contract of every function.
 */
#include "seng_net.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_URG 0x20
#define TCP_ECE 0x40
#define TCP_CWR 0x80
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IP_DF 0x4000
#define IP_MF_OFFSET 0x3fff
/* How many frames back seng_gro_add() looks for the packet's flow. */
#define GRO_SCAN 64

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t rd32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void wr16(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static inline void wr32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* ------------------------------------------------------------------------------------------ */
/* virtio_net_hdr */

void seng_vnet_hdr_read(const uint8_t *p, seng_vnet_hdr *h) {
  h->flags = p[0];
  h->gso_type = p[1];
  memcpy(&h->hdr_len, p + 2, 2);
  memcpy(&h->gso_size, p + 4, 2);
  memcpy(&h->csum_start, p + 6, 2);
  memcpy(&h->csum_offset, p + 8, 2);
}

void seng_vnet_hdr_write(uint8_t *p, const seng_vnet_hdr *h) {
  p[0] = h->flags;
  p[1] = h->gso_type;
  memcpy(p + 2, &h->hdr_len, 2);
  memcpy(p + 4, &h->gso_size, 2);
  memcpy(p + 6, &h->csum_start, 2);
  memcpy(p + 8, &h->csum_offset, 2);
}

/* ------------------------------------------------------------------------------------------ */
/* IPv4 and checksums */

int seng_ipv4_check(const uint8_t *pkt, size_t len) {
  if (len < 20) return SENG_IPV4_TOO_SHORT;
  if ((pkt[0] >> 4) != 4) return SENG_IPV4_BAD_VERSION;
  size_t ihl = (size_t)(pkt[0] & 0x0f) * 4;
  if (ihl < 20 || ihl > len) return SENG_IPV4_BAD_HEADER_LENGTH;
  size_t total = rd16(pkt + 2);
  if (total < ihl || total > len) return SENG_IPV4_BAD_TOTAL_LENGTH;
  return SENG_IPV4_OK;
}

uint32_t seng_csum_add(uint32_t sum, const uint8_t *d, size_t len) {
  /* Bulk: native-order 32-bit words (RFC 1071: the sum is byte-order independent up to a final
   * byte swap) into four independent 64-bit accumulators, so the additions of one 32-byte block
   * do not wait on each other (this runs over every UDP datagram the TUN writer merges; one
   * chain of dependent additions made it ≈ 1.6× slower). Each accumulator takes at most two
   * 32-bit words per block: no overflow below 2^31 blocks. The tail in big-endian 16-bit words. */
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  while (len >= 32) {
    uint64_t w0, w1, w2, w3;
    memcpy(&w0, d, 8);
    memcpy(&w1, d + 8, 8);
    memcpy(&w2, d + 16, 8);
    memcpy(&w3, d + 24, 8);
    a0 += (w0 & 0xffffffffu) + (w0 >> 32);
    a1 += (w1 & 0xffffffffu) + (w1 >> 32);
    a2 += (w2 & 0xffffffffu) + (w2 >> 32);
    a3 += (w3 & 0xffffffffu) + (w3 >> 32);
    d += 32;
    len -= 32;
  }
  /* Fold each to 32 bits before adding them up (a 4 GiB buffer could otherwise carry out). */
  uint64_t bulk = (a0 & 0xffffffffu) + (a0 >> 32) + (a1 & 0xffffffffu) + (a1 >> 32) + (a2 & 0xffffffffu) +
                  (a2 >> 32) + (a3 & 0xffffffffu) + (a3 >> 32);
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, d, 8);
    bulk += (w & 0xffffffffu) + (w >> 32);
    d += 8;
    len -= 8;
  }
  while (bulk >> 16) bulk = (bulk & 0xffff) + (bulk >> 16);
  uint32_t v = (uint32_t)bulk;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  v = ((v & 0xff) << 8) | (v >> 8);
#endif
  uint64_t s = (uint64_t)sum + v;
  while (len >= 2) {
    s += (uint32_t)((d[0] << 8) | d[1]);
    d += 2;
    len -= 2;
  }
  if (len) s += (uint32_t)d[0] << 8;
  while (s >> 32) s = (s & 0xffffffffu) + (s >> 32);
  return (uint32_t)s;
}

uint16_t seng_csum_fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

uint32_t seng_csum_pseudo4(const uint8_t *ip, uint8_t proto, uint32_t l4_len) {
  uint64_t s = (uint64_t)rd16(ip + 12) + rd16(ip + 14) + rd16(ip + 16) + rd16(ip + 18) + proto +
               (l4_len >> 16) + (l4_len & 0xffff);
  while (s >> 32) s = (s & 0xffffffffu) + (s >> 32);
  return (uint32_t)s;
}

static size_t ihl_of(const uint8_t *pkt) { return (size_t)(pkt[0] & 0x0f) * 4; }

int seng_ipv4_header_csum_ok(const uint8_t *pkt) {
  return seng_csum_fold(seng_csum_add(0, pkt, ihl_of(pkt))) == 0;
}

void seng_ipv4_set_header_csum(uint8_t *pkt) {
  pkt[10] = pkt[11] = 0;
  wr16(pkt + 10, seng_csum_fold(seng_csum_add(0, pkt, ihl_of(pkt))));
}

int seng_ipv4_l4_csum_ok(const uint8_t *pkt, size_t len) {
  if (seng_ipv4_check(pkt, len) != SENG_IPV4_OK) return 0;
  if (rd16(pkt + 6) & IP_MF_OFFSET) return 0;
  size_t ihl = ihl_of(pkt), total = rd16(pkt + 2), l4 = total - ihl;
  uint8_t proto = pkt[9];
  if (proto == IPPROTO_TCP_) {
    if (l4 < 20) return 0;
  } else if (proto == IPPROTO_UDP_) {
    if (l4 < 8) return 0;
    if (rd16(pkt + ihl + 6) == 0) return 1;
  } else {
    return 0;
  }
  uint32_t s = seng_csum_add(seng_csum_pseudo4(pkt, proto, (uint32_t)l4), pkt + ihl, l4);
  return seng_csum_fold(s) == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* segmentation */

/* A non-GSO frame: copy, completing a CHECKSUM_PARTIAL checksum. */
static int split_plain(const seng_vnet_hdr *h, const uint8_t *pkt, size_t len, uint8_t *out,
                       size_t out_cap, uint32_t *ends, size_t ends_cap) {
  if (ends_cap < 1 || out_cap < len) return -ENOSPC;
  if (h->flags & SENG_VNET_F_NEEDS_CSUM) {
    size_t start = h->csum_start, field = start + h->csum_offset;
    if (start >= len || field + 2 > len) return -EINVAL;
    memcpy(out, pkt, len);
    /* The field holds the pseudo-header sum already; 0 becomes 0xffff as the kernel does. */
    uint16_t c = seng_csum_fold(seng_csum_add(0, out + start, len - start));
    wr16(out + field, c == 0 ? 0xffff : c);
  } else {
    memcpy(out, pkt, len);
  }
  ends[0] = (uint32_t)len;
  return 1;
}

/* The checks every super-packet passes: a well-formed, unfragmented IPv4 packet of `proto`. */
static int gso_ipv4_ok(const uint8_t *pkt, size_t len, uint8_t proto) {
  return seng_ipv4_check(pkt, len) == SENG_IPV4_OK && pkt[9] == proto && !(rd16(pkt + 6) & IP_MF_OFFSET);
}

/* Writes segment i of a super-packet at `o`: its headers (hl bytes) and `plen` payload bytes from
 * payload offset `from`, with the IP total length, IP id `id` and the IP header checksum set.
 * The caller completes the L4 header. Returns the segment's end. */
static uint8_t *cut_segment(uint8_t *o, const uint8_t *pkt, size_t hl, size_t from, size_t plen,
                            uint16_t id) {
  memcpy(o, pkt, hl);
  memcpy(o + hl, pkt + hl + from, plen);
  wr16(o + 2, (uint32_t)(hl + plen));
  wr16(o + 4, id);
  seng_ipv4_set_header_csum(o);
  return o + hl + plen;
}

/* A UDP super-packet (USO: a sender's UDP_SEGMENT run, or datagrams of one flow merged by GRO on
 * the way in) -> its datagrams. Unlike TCP, a datagram's bounds are the sender's message bounds:
 * every datagram carries exactly gso_size payload bytes (the last one 1..gso_size), whatever the
 * MTU; one that does not fit the MTU is left for the caller to refuse, as an oversize plain
 * packet is. Each gets its IP total length, the kernel's incrementing IP ID, its UDP length and
 * a complete UDP checksum. */
static int split_udp(const seng_vnet_hdr *h, const uint8_t *pkt, size_t len, uint8_t *out,
                     size_t out_cap, uint32_t *ends, size_t ends_cap) {
  if (!gso_ipv4_ok(pkt, len, IPPROTO_UDP_)) return -EINVAL;
  size_t ihl = ihl_of(pkt), total = rd16(pkt + 2);
  size_t hl = ihl + 8;
  if (total <= hl || h->gso_size == 0) return -EINVAL;
  size_t payload = total - hl, seg = h->gso_size;
  size_t nseg = (payload + seg - 1) / seg;
  if (nseg > ends_cap || nseg > SENG_GSO_MAX_SEGS) return -ENOSPC;
  if (payload + nseg * hl > out_cap) return -ENOSPC;

  uint16_t id = rd16(pkt + 4);
  uint8_t *o = out;
  for (size_t i = 0; i < nseg; i++) {
    size_t plen = payload - i * seg < seg ? payload - i * seg : seg;
    uint8_t *end = cut_segment(o, pkt, hl, i * seg, plen, (uint16_t)(id + i));
    uint8_t *uh = o + ihl;
    wr16(uh + 4, (uint32_t)(8 + plen));
    uh[6] = uh[7] = 0;
    uint16_t c = seng_csum_fold(
        seng_csum_add(seng_csum_pseudo4(o, IPPROTO_UDP_, (uint32_t)(8 + plen)), uh, 8 + plen));
    wr16(uh + 6, c == 0 ? 0xffff : c); /* 0 means "no checksum" in UDP */
    o = end;
    ends[i] = (uint32_t)(o - out);
  }
  return (int)nseg;
}

/* A TCPv4 super-packet (TSO) -> segments of at most min(gso_size, mtu - headers) payload bytes,
 * sequence numbers, flags and full TCP checksums set per segment. */
static int split_tcp(const seng_vnet_hdr *h, size_t mtu, const uint8_t *pkt, size_t len, uint8_t *out,
                     size_t out_cap, uint32_t *ends, size_t ends_cap) {
  if (!gso_ipv4_ok(pkt, len, IPPROTO_TCP_)) return -EINVAL;
  size_t ihl = ihl_of(pkt), total = rd16(pkt + 2);
  if (total < ihl + 20) return -EINVAL;
  const uint8_t *tcp = pkt + ihl;
  size_t thl = (size_t)(tcp[12] >> 4) * 4;
  if (thl < 20 || ihl + thl > total) return -EINVAL;
  size_t hl = ihl + thl, payload = total - hl;
  if (h->gso_size == 0 || mtu <= hl) return -EINVAL;
  size_t seg = mtu - hl < h->gso_size ? mtu - hl : h->gso_size;
  size_t nseg = payload == 0 ? 1 : (payload + seg - 1) / seg;
  if (nseg > ends_cap || nseg > SENG_GSO_MAX_SEGS) return -ENOSPC;
  if (payload + nseg * hl > out_cap) return -ENOSPC;

  uint16_t id = rd16(pkt + 4);
  uint32_t seq = rd32(tcp + 4);
  uint8_t flags = tcp[13];
  uint8_t *o = out;
  for (size_t i = 0; i < nseg; i++) {
    size_t plen = payload - i * seg < seg ? payload - i * seg : seg;
    uint8_t *end = cut_segment(o, pkt, hl, i * seg, plen, (uint16_t)(id + i));
    uint8_t *th = o + ihl;
    wr32(th + 4, seq + (uint32_t)(i * seg));
    uint8_t f = flags;
    if (i + 1 != nseg) f &= (uint8_t)~(TCP_FIN | TCP_PSH);
    if (i != 0) f &= (uint8_t)~TCP_CWR;
    th[13] = f;
    th[16] = th[17] = 0;
    uint32_t s = seng_csum_add(seng_csum_pseudo4(o, IPPROTO_TCP_, (uint32_t)(thl + plen)), th,
                               thl + plen);
    wr16(th + 16, seng_csum_fold(s));
    o = end;
    ends[i] = (uint32_t)(o - out);
  }
  return (int)nseg;
}

int seng_gso_split(const uint8_t *frame, size_t frame_len, size_t mtu, uint8_t *out,
                   size_t out_cap, uint32_t *ends, size_t ends_cap) {
  if (frame_len <= SENG_VNET_HDR_LEN || frame_len - SENG_VNET_HDR_LEN > 0xffffffffu)
    return -EINVAL;
  seng_vnet_hdr h;
  seng_vnet_hdr_read(frame, &h);
  const uint8_t *pkt = frame + SENG_VNET_HDR_LEN;
  size_t len = frame_len - SENG_VNET_HDR_LEN;
  switch (h.gso_type & (uint8_t)~SENG_VNET_GSO_ECN) {
    case SENG_VNET_GSO_NONE:
      return split_plain(&h, pkt, len, out, out_cap, ends, ends_cap);
    case SENG_VNET_GSO_TCPV4:
      return split_tcp(&h, mtu, pkt, len, out, out_cap, ends, ends_cap);
    case SENG_VNET_GSO_UDP_L4:
      return split_udp(&h, pkt, len, out, out_cap, ends, ends_cap);
    default:
      return -EPROTONOSUPPORT;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* The SENG_TUN_USO switch (UDP offload of TUN devices, both directions) */

int seng_tun_uso_allowed(void) {
  const char *v = getenv("SENG_TUN_USO");
  return !(v != NULL && strcmp(v, "0") == 0);
}

/* ------------------------------------------------------------------------------------------ */
/* coalescing */

void seng_gro_init(seng_gro *g) {
  g->npkts = 0;
  g->nframes = 0;
  g->merge_udp = 1;
}

/* Empties the batch, keeping the settings. */
static void gro_clear(seng_gro *g) {
  g->npkts = 0;
  g->nframes = 0;
}

size_t seng_gro_frames(const seng_gro *g) { return g->nframes; }

/* Fills the flow key of an IPv4 TCP or UDP packet whose ports are readable; returns its protocol,
 * 0 if it is not one. */
static int flow_key(const uint8_t *p, size_t len, uint8_t key[12]) {
  if (seng_ipv4_check(p, len) != SENG_IPV4_OK || (p[9] != IPPROTO_TCP_ && p[9] != IPPROTO_UDP_)) return 0;
  size_t ihl = ihl_of(p);
  if ((size_t)rd16(p + 2) < ihl + 4 || (rd16(p + 6) & IP_MF_OFFSET)) return 0;
  memcpy(key, p + 12, 8);
  memcpy(key + 8, p + ihl, 4);
  return p[9];
}

/* A segment that may be merged: no IP options, exact length, unfragmented, flags ACK [+ PSH],
 * payload, correct checksums. Sets *thl and *plen. */
static int mergeable_segment(const uint8_t *p, size_t len, size_t *thl, size_t *plen) {
  if ((p[0] & 0x0f) != 5 || rd16(p + 2) != len || len < 40) return 0;
  size_t t = (size_t)(p[32] >> 4) * 4;
  if (t < 20 || 20 + t >= len) return 0;
  if ((p[33] & (uint8_t)~TCP_PSH) != TCP_ACK) return 0;
  if (!seng_ipv4_header_csum_ok(p) || !seng_ipv4_l4_csum_ok(p, len)) return 0;
  *thl = t;
  *plen = len - 20 - t;
  return 1;
}

/* A UDP datagram that may be merged: no IP options, exact IP and UDP lengths, unfragmented, a
 * payload, a checksum that is present and correct. Sets *plen. */
static int mergeable_datagram(const uint8_t *p, size_t len, size_t *plen) {
  if ((p[0] & 0x0f) != 5 || rd16(p + 2) != len || len <= 28 || rd16(p + 24) != len - 20) return 0;
  if (rd16(p + 26) == 0 || !seng_ipv4_header_csum_ok(p) || !seng_ipv4_l4_csum_ok(p, len)) return 0;
  *plen = len - 28;
  return 1;
}

/* Whether segment p (TCP header length thl) may follow frame f's head h. */
static int continues(const seng_gro_frame *f, const uint8_t *h, const uint8_t *p, size_t thl,
                     size_t plen) {
  return f->mergeable && f->hdr_len == 20 + thl && h[1] == p[1] && h[8] == p[8] &&
         (rd16(h + 6) & IP_DF) == (rd16(p + 6) & IP_DF) && memcmp(h + 28, p + 28, 4) == 0 &&
         memcmp(h + 40, p + 40, thl - 20) == 0 && plen <= f->gso_size &&
         rd32(p + 24) == f->next_seq && f->total_len + plen <= 0xffff;
}

/* Whether datagram p may follow frame f's head h (same TOS, TTL, DF; not longer; room left). */
static int continues_udp(const seng_gro_frame *f, const uint8_t *h, const uint8_t *p, size_t plen) {
  return f->mergeable && h[1] == p[1] && h[8] == p[8] &&
         (rd16(h + 6) & IP_DF) == (rd16(p + 6) & IP_DF) && plen <= f->gso_size &&
         f->count < SENG_GRO_UDP_MAX_SEGS && f->total_len + plen <= 0xffff;
}

int seng_gro_add(seng_gro *g, const uint8_t *pkt, size_t len) {
  if (len == 0 || len > 0xffff) return -EMSGSIZE;
  if (g->npkts >= SENG_GRO_MAX_PKTS) return -ENOSPC;
  int16_t pi = (int16_t)g->npkts;
  seng_gro_pkt *pk = &g->pkts[pi];
  pk->data = pkt;
  pk->len = (uint32_t)len;
  pk->payload_off = 0;
  pk->next = -1;

  uint8_t key[12];
  const int proto = flow_key(pkt, len, key);
  size_t thl = 0, plen = 0;
  int candidate = proto == IPPROTO_TCP_   ? mergeable_segment(pkt, len, &thl, &plen)
                  : proto == IPPROTO_UDP_ && g->merge_udp ? mergeable_datagram(pkt, len, &plen)
                                          : 0;
  if (proto != 0) {
    /* The newest frame of this flow decides: append to it, or start a new one after it. */
    size_t stop = g->nframes > GRO_SCAN ? g->nframes - GRO_SCAN : 0;
    for (size_t i = g->nframes; i-- > stop;) {
      seng_gro_frame *f = &g->frames[i];
      if (f->proto != proto || memcmp(f->key, key, 12) != 0) continue;
      const uint8_t *h = g->pkts[f->first].data;
      if (candidate && proto == IPPROTO_UDP_ && continues_udp(f, h, pkt, plen)) {
        g->pkts[f->last].next = pi;
        f->last = pi;
        f->count++;
        pk->payload_off = 28;
        f->total_len += (uint32_t)plen;
        if (plen < f->gso_size) f->mergeable = 0; /* a shorter datagram is the last segment */
        g->npkts++;
        return 0;
      }
      if (candidate && proto == IPPROTO_TCP_ && continues(f, h, pkt, thl, plen)) {
        g->pkts[f->last].next = pi;
        f->last = pi;
        f->count++;
        pk->payload_off = (uint16_t)(20 + thl);
        f->total_len += (uint32_t)plen;
        f->next_seq += (uint32_t)plen;
        f->psh = (pkt[33] & TCP_PSH) != 0;
        if (plen < f->gso_size || f->psh) f->mergeable = 0;
        g->npkts++;
        return 0;
      }
      break;
    }
  }
  seng_gro_frame *f = &g->frames[g->nframes++];
  memset(f, 0, sizeof *f);
  f->first = f->last = pi;
  f->count = 1;
  f->proto = (uint8_t)proto;
  if (proto != 0) memcpy(f->key, key, 12);
  if (candidate && proto == IPPROTO_TCP_) {
    f->psh = (pkt[33] & TCP_PSH) != 0;
    f->mergeable = !f->psh;
    f->hdr_len = (uint8_t)(20 + thl);
    f->gso_size = (uint16_t)plen;
    f->next_seq = rd32(pkt + 24) + (uint32_t)plen;
    f->total_len = (uint32_t)len;
  } else if (candidate) {
    f->mergeable = 1;
    f->hdr_len = 28;
    f->gso_size = (uint16_t)plen;
    f->total_len = (uint32_t)len;
  }
  g->npkts++;
  return 0;
}

int seng_gro_frame_iov(seng_gro *g, size_t i, struct iovec *iov, size_t iov_cap,
                       size_t *frame_len) {
  if (i >= g->nframes) return -EINVAL;
  const seng_gro_frame *f = &g->frames[i];
  const seng_gro_pkt *head = &g->pkts[f->first];
  if (f->count == 1) {
    if (iov_cap < 2) return -ENOSPC;
    memset(g->hdr, 0, SENG_VNET_HDR_LEN);
    iov[0].iov_base = g->hdr;
    iov[0].iov_len = SENG_VNET_HDR_LEN;
    iov[1].iov_base = (void *)head->data;
    iov[1].iov_len = head->len;
    *frame_len = SENG_VNET_HDR_LEN + head->len;
    return 2;
  }
  if (iov_cap < 1 + (size_t)f->count) return -ENOSPC;
  const int udp = f->proto == IPPROTO_UDP_;
  seng_vnet_hdr vh = {SENG_VNET_F_NEEDS_CSUM, udp ? SENG_VNET_GSO_UDP_L4 : SENG_VNET_GSO_TCPV4,
                      f->hdr_len, f->gso_size, 20, udp ? 6 : 16};
  seng_vnet_hdr_write(g->hdr, &vh);
  uint8_t *ip = g->hdr + SENG_VNET_HDR_LEN;
  memcpy(ip, head->data, f->hdr_len);
  wr16(ip + 2, f->total_len);
  seng_ipv4_set_header_csum(ip);
  uint8_t *th = ip + 20;
  if (udp) {
    wr16(th + 4, f->total_len - 20); /* the segments get their own lengths from the kernel */
  } else if (f->psh) {
    th[13] |= TCP_PSH;
  }
  /* CHECKSUM_PARTIAL: the field holds the (uncomplemented) pseudo-header sum. */
  wr16(th + (udp ? 6 : 16),
       (uint16_t)~seng_csum_fold(seng_csum_pseudo4(ip, (uint8_t)f->proto, f->total_len - 20)));
  iov[0].iov_base = g->hdr;
  iov[0].iov_len = SENG_VNET_HDR_LEN + (size_t)f->hdr_len;
  size_t n = 1;
  for (int16_t k = f->first; k >= 0; k = g->pkts[k].next) {
    const seng_gro_pkt *p = &g->pkts[k];
    size_t skip = k == f->first ? f->hdr_len : p->payload_off;
    iov[n].iov_base = (void *)(p->data + skip);
    iov[n].iov_len = p->len - skip;
    n++;
  }
  *frame_len = SENG_VNET_HDR_LEN + f->total_len;
  return (int)n;
}

size_t seng_gro_write(seng_gro *g, int fd, seng_gro_result *res) {
  seng_gro_result r;
  memset(&r, 0, sizeof r);
  struct iovec iov[1 + SENG_GRO_MAX_PKTS];
  for (size_t i = 0; i < g->nframes; i++) {
    size_t flen = 0;
    int n = seng_gro_frame_iov(g, i, iov, sizeof iov / sizeof iov[0], &flen);
    uint32_t count = g->frames[i].count;
    ssize_t w = -1;
    if (n > 0) {
      do {
        w = writev(fd, iov, n);
      } while (w < 0 && errno == EINTR);
    } else {
      errno = -n;
    }
    if (w >= 0) {
      r.frames_written++;
      if (count > 1) r.frames_gso++;
      r.packets_written += count;
      r.bytes_written += (uint32_t)(flen - SENG_VNET_HDR_LEN);
    } else {
      if (errno == EAGAIN || errno == EWOULDBLOCK) r.frames_eagain++;
      else {
        r.frames_failed++;
        r.last_errno = errno;
      }
      r.packets_dropped += count;
    }
  }
  gro_clear(g);
  if (res) *res = r;
  return r.packets_written;
}

ssize_t seng_tun_write_vnet(int fd, const uint8_t *pkt, size_t len) {
  static const uint8_t zero[SENG_VNET_HDR_LEN];
  struct iovec iov[2] = {{(void *)zero, SENG_VNET_HDR_LEN}, {(void *)pkt, len}};
  ssize_t w;
  do {
    w = writev(fd, iov, 2);
  } while (w < 0 && errno == EINTR);
  if (w < 0) return -errno;
  return w >= SENG_VNET_HDR_LEN ? w - SENG_VNET_HDR_LEN : 0;
}

int seng_tun_read(int fd, int vnet_hdr, size_t mtu, uint8_t *frame, size_t frame_cap, uint8_t *out,
                  size_t out_cap, uint32_t *ends, size_t ends_cap) {
  if (ends_cap < 1) return -ENOSPC;
  if (!vnet_hdr) {
    if (out_cap < SENG_TUN_READ_MAX) return -ENOSPC;
    ssize_t r;
    do {
      r = read(fd, out, SENG_TUN_READ_MAX);
    } while (r < 0 && errno == EINTR);
    if (r < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    if (r == 0) return -EAGAIN;
    ends[0] = (uint32_t)r;
    return 1;
  }
  if (frame == NULL || frame_cap < SENG_TUN_FRAME_MAX) return -ENOSPC;
  ssize_t r;
  do {
    r = read(fd, frame, SENG_TUN_FRAME_MAX);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  if (r == 0) return -EAGAIN;
  int n = seng_gso_split(frame, (size_t)r, mtu, out, out_cap, ends, ends_cap);
  return n > 0 ? n : 0;
}

/* ---------------------------------------------------------------------------------------------
 * UDP GRO reads */

int seng_udp_gro_split(size_t len, int gso_size, uint32_t *ends, size_t ends_cap) {
  if (len == 0 || len > 65535 || gso_size < 0 || gso_size > 65535) return -EINVAL;
  const size_t seg = gso_size == 0 ? len : (size_t)gso_size;
  const size_t count = (len + seg - 1) / seg; /* the last datagram has 1..seg bytes */
  if (count > ends_cap) return -E2BIG;
  for (size_t i = 0; i < count; i++) {
    const size_t end = (i + 1) * seg;
    ends[i] = (uint32_t)(end < len ? end : len);
  }
  return (int)count;
}
