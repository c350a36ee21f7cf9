/*
 * seng_net: pure C helpers shared by the native addons (native/tun, native/dtls) for packets that
 * cross a TUN device: IPv4 header checks, Internet checksums, and the TUN offloads (IFF_VNET_HDR +
 * TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4, plus TUN_F_USO4 | TUN_F_USO6 where the kernel has them)):
 *
 *   kernel -> us   seng_gso_split(): one frame (virtio_net_hdr + packet, possibly a TSO
 *                  or UDP super-packet of up to 64 KiB or a CHECKSUM_PARTIAL packet) -> plain IPv4
 *                  packets of at most `mtu` bytes with complete checksums (SPEC §1: one packet
 *                  per DTLS record).
 *   us -> kernel   seng_gro_*: collect the packets of a batch, merge consecutive TCP segments of
 *                  one flow into one GSO super-packet, and write every frame (with its
 *                  virtio_net_hdr) to the TUN fd; everything else is written unchanged behind a
 *                  zero header.
 *
 * No N-API, no allocation, no global state: every function works on caller-owned memory and is
 * safe to call from any thread on distinct objects. Every length read from a packet is checked
 * against the buffer; malformed input gives a negative errno, never an out-of-bounds access.
 *
 * The virtio_net_hdr on a TUN fd is the legacy one (10 bytes, no num_buffers) in host byte order
 * (we never call TUNSETVNETLE/BE), the same as struct virtio_net_hdr in <linux/virtio_net.h>.
 */
#ifndef SENG_NET_H
#define SENG_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * virtio_net_hdr */

#define SENG_VNET_HDR_LEN 10
#define SENG_VNET_F_NEEDS_CSUM 1 /* checksum from csum_start, stored at csum_start + csum_offset */
#define SENG_VNET_GSO_NONE 0
#define SENG_VNET_GSO_TCPV4 1
#define SENG_VNET_GSO_UDP_L4 5 /* UDP segmentation offload (Linux >= 6.2 on TUN) */
#define SENG_VNET_GSO_ECN 0x80

typedef struct seng_vnet_hdr {
  uint8_t flags;
  uint8_t gso_type;
  uint16_t hdr_len;     /* hint only: length of the IP + TCP headers */
  uint16_t gso_size;    /* payload bytes per segment (the MSS) */
  uint16_t csum_start;  /* offset of the L4 header from the start of the packet */
  uint16_t csum_offset; /* offset of the checksum field from csum_start (16 for TCP, 6 for UDP) */
} seng_vnet_hdr;

/* Reads / writes the 10 header bytes at `p` (host byte order). */
void seng_vnet_hdr_read(const uint8_t *p, seng_vnet_hdr *h);
void seng_vnet_hdr_write(uint8_t *p, const seng_vnet_hdr *h);

/* ---------------------------------------------------------------------------------------------
 * IPv4 and checksums */

/* Result of seng_ipv4_check(); the same codes as Ipv4Check in src/tunnel/packet.ts. */
enum {
  SENG_IPV4_OK = 0,
  SENG_IPV4_TOO_SHORT = 1,         /* fewer than 20 bytes */
  SENG_IPV4_BAD_VERSION = 2,       /* version nibble is not 4 */
  SENG_IPV4_BAD_HEADER_LENGTH = 3, /* IHL < 5 or header longer than the buffer */
  SENG_IPV4_BAD_TOTAL_LENGTH = 4   /* total length < IHL or > the buffer (trailing bytes are ok) */
};
int seng_ipv4_check(const uint8_t *pkt, size_t len);

/* One's-complement sum of `len` bytes (big-endian 16-bit words, odd last byte padded) added to
 * `sum`; fold with seng_csum_fold(). */
uint32_t seng_csum_add(uint32_t sum, const uint8_t *data, size_t len);
/* Folds a 32-bit sum to 16 bits and complements it: the value to store in a checksum field (as a
 * host-order number; store it big-endian). A correct packet sums (with its checksum) to 0. */
uint16_t seng_csum_fold(uint32_t sum);
/* Sum of the IPv4 pseudo-header (src, dst from `ip`; protocol; L4 length). */
uint32_t seng_csum_pseudo4(const uint8_t *ip, uint8_t proto, uint32_t l4_len);

/* 1 if the IPv4 header checksum is right (needs seng_ipv4_check() == OK first). */
int seng_ipv4_header_csum_ok(const uint8_t *pkt);
/* Recomputes the IPv4 header checksum in place (needs seng_ipv4_check() == OK first). */
void seng_ipv4_set_header_csum(uint8_t *pkt);
/* 1 if the packet is IPv4/TCP or IPv4/UDP (unfragmented) with a correct L4 checksum (UDP with
 * checksum 0 counts as correct); 0 otherwise (including malformed). */
int seng_ipv4_l4_csum_ok(const uint8_t *pkt, size_t len);

/* ---------------------------------------------------------------------------------------------
 * kernel -> us: segmentation (the work of a NIC doing TSO / checksum offload) */

/* Most packets one seng_gso_split() call may produce; frames needing more are refused. */
#define SENG_GSO_MAX_SEGS 256
/* Room in `out` that always suffices for one frame of up to 65535 + SENG_VNET_HDR_LEN bytes that
 * splits into at most SENG_GSO_MAX_SEGS packets (the payload plus per-packet headers of at most
 * 60 + 60 bytes). */
#define SENG_GSO_SPLIT_ROOM (65536 + SENG_GSO_MAX_SEGS * 120)

/*
 * Splits one frame read from a TUN fd opened with IFF_VNET_HDR (a virtio_net_hdr followed by one
 * packet) into plain packets, written back to back into `out` (capacity out_cap); ends[i] is the
 * end offset (from `out`) of packet i, for at most ends_cap packets.
 *   - GSO_NONE: the packet is copied as is; with NEEDS_CSUM its checksum is completed first
 *     (any protocol: csum over [csum_start, end) stored at csum_start + csum_offset).
 *   - GSO_TCPV4 (ECN bit allowed): the IPv4/TCP super-packet is cut into segments of at most
 *     min(gso_size, mtu - headers) payload bytes, each at most `mtu` bytes: IP id + i, total
 *     length, IP header checksum, TCP sequence number, flags (FIN and PSH only on the last
 *     segment, CWR only on the first) and a full TCP checksum are set per segment.
 *   - GSO_UDP_L4 (TUN_F_USO4, Linux >= 6.2): the IPv4/UDP super-packet is cut into its
 *     datagrams of exactly gso_size payload bytes (the last 1..gso_size) — the sender's message
 *     bounds, so never re-cut to the MTU (a datagram over `mtu` is for the caller to refuse, as
 *     an oversize plain packet) — with IP id + i, total length, IP header checksum, UDP length
 *     and a full UDP checksum each.
 * Returns the number of packets (>= 1), or:
 *   -EINVAL    frame shorter than the header, bad checksum offsets, a GSO packet that is not a
 *              well-formed unfragmented IPv4/TCP (IPv4/UDP) packet, gso_size 0, mtu too small;
 *   -EPROTONOSUPPORT  another gso_type (TCPv6, the IPv6 side of USO: seng forwards IPv4 only);
 *   -ENOSPC    `out` or `ends` too small (SENG_GSO_SPLIT_ROOM and SENG_GSO_MAX_SEGS suffice
 *              unless the frame needs more than SENG_GSO_MAX_SEGS segments);
 * Nothing is written to ends on failure; `out` may have been written.
 */
int seng_gso_split(const uint8_t *frame, size_t frame_len, size_t mtu, uint8_t *out,
                   size_t out_cap, uint32_t *ends, size_t ends_cap);

/* Whether TUN devices may use UDP segmentation offload (USO): on unless the environment sets
 * SENG_TUN_USO=0 — one switch for both directions (the devices' TUN_F_USO4 reads and the merged
 * UDP writes of seng_gro_*). */
int seng_tun_uso_allowed(void);

/* ---------------------------------------------------------------------------------------------
 * us -> kernel: coalescing (GRO) and writing
 *
 *   seng_gro g;                         // ~12 KiB: keep one per writer, not on a small stack
 *   seng_gro_init(&g);
 *   for each packet p of a batch:       // p must stay valid and unchanged until the flush
 *     if (seng_gro_add(&g, p, len) == -ENOSPC) { seng_gro_write(&g, fd, NULL); seng_gro_add(...); }
 *   seng_gro_write(&g, fd, &result);    // one writev() per frame, then resets g
 *
 * A TCP segment joins the newest frame of its flow when it continues it: IPv4 without options,
 * not fragmented, same addresses/ports/TOS/TTL/DF, same ACK number, same TCP header length and
 * identical option bytes, flags ACK (+ PSH, which closes the frame), payload > 0 and at most the
 * frame's first payload (a shorter one closes the frame), seq == the frame's next seq, total
 * length <= 65535, and both IPv4 header and TCP checksums correct (a corrupt segment is written
 * alone and unchanged, so the kernel drops it as it would without offload). Frames of one flow
 * keep their order; frames of different flows may be reordered relative to each other.
 * A frame of one packet is written unchanged behind a zero header; a merged frame gets the first
 * segment's headers with total length, IP checksum, PSH (if the last had it) and the TCP
 * pseudo-header checksum (CHECKSUM_PARTIAL), and a header {NEEDS_CSUM, GSO_TCPV4, hdr_len,
 * gso_size = first payload, csum_start = 20, csum_offset = 16}.
 *
 * A UDP datagram (merge_udp) joins the newest frame of its flow under the same conditions where
 * they apply (IPv4 without options, not fragmented, same addresses/ports/TOS/TTL/DF, both
 * checksums correct, the UDP checksum present, UDP length = IP payload), with a payload > 0 and at
 * most the frame's first payload (a shorter one closes the frame: the receiver must see the same
 * datagrams), at most SENG_GRO_UDP_MAX_SEGS datagrams and 65535 bytes. A merged UDP frame gets the
 * first datagram's headers with total length, IP checksum, UDP length and the UDP pseudo-header
 * checksum, and a header {NEEDS_CSUM, GSO_UDP_L4, 28, gso_size = first payload, 20, 6}: the
 * kernel (TUN, Linux >= 6.2) cuts it back into the same datagrams where it has to (at the latest
 * at the receiving socket), after one pass through routing and the firewall.
 */
#define SENG_GRO_MAX_PKTS 256
#define SENG_GRO_UDP_MAX_SEGS 64 /* UDP_MAX_SEGMENTS of kernels before 6.10 */
#define SENG_GRO_HDR_MAX (SENG_VNET_HDR_LEN + 20 + 60)

typedef struct seng_gro_pkt {
  const uint8_t *data; /* the caller's packet */
  uint32_t len;
  uint16_t payload_off; /* first payload byte (merged frames), else 0 */
  int16_t next;         /* next packet of the same frame, -1 = last */
} seng_gro_pkt;

typedef struct seng_gro_frame {
  int16_t first, last; /* packet indexes */
  uint16_t count;      /* packets merged into this frame */
  uint8_t mergeable;   /* may still take packets */
  uint8_t hdr_len;     /* IP + TCP/UDP header length (mergeable frames), else 0 */
  uint16_t gso_size;
  uint32_t next_seq;
  uint32_t total_len;  /* IP total length of the merged packet */
  uint8_t proto;       /* key is set: 6 or 17, an IPv4 TCP or UDP packet with readable ports */
  uint8_t psh;         /* the last merged segment had PSH */
  uint8_t key[12];     /* source, destination address; source, destination port */
} seng_gro_frame;

typedef struct seng_gro {
  uint16_t npkts, nframes;
  uint8_t merge_udp; /* merge UDP datagrams too (seng_gro_init sets it; the owner may clear it) */
  seng_gro_pkt pkts[SENG_GRO_MAX_PKTS];
  seng_gro_frame frames[SENG_GRO_MAX_PKTS];
  uint8_t hdr[SENG_GRO_HDR_MAX]; /* scratch for building one merged frame's headers */
} seng_gro;

void seng_gro_init(seng_gro *g);
/* Adds one packet (any content; non-TCP and malformed packets become frames of their own).
 * 0 = added; -ENOSPC = the batch is full (write it, then add again); -EMSGSIZE = empty or longer
 * than 65535 bytes (not added). */
int seng_gro_add(seng_gro *g, const uint8_t *pkt, size_t len);
/* Number of frames the batch will write (<= packets added). */
size_t seng_gro_frames(const seng_gro *g);

/* Builds frame i as an iovec list for writev(): iov[0] = the virtio_net_hdr (+ the rebuilt
 * IP/TCP headers of a merged frame) in g->hdr (valid until the next call), then the packet or
 * the segments' payloads. Returns the number of iovecs (<= 1 + SENG_GRO_MAX_PKTS), or -ENOSPC
 * if iov_cap is too small; *frame_len gets the frame's total length. */
struct iovec;
int seng_gro_frame_iov(seng_gro *g, size_t i, struct iovec *iov, size_t iov_cap,
                       size_t *frame_len);

typedef struct seng_gro_result {
  uint32_t frames_written;  /* frames the kernel accepted */
  uint32_t frames_gso;      /* of those, GSO frames (two or more coalesced segments) */
  uint32_t packets_written; /* packets in those frames (what the caller handed in) */
  uint32_t bytes_written;   /* IP bytes (without virtio headers) */
  uint32_t frames_eagain;   /* frames dropped: device queue full */
  uint32_t frames_failed;   /* frames dropped: other error (last one in last_errno) */
  uint32_t packets_dropped; /* packets in the dropped frames */
  int last_errno;
} seng_gro_result;

/* Writes every frame to `fd` (a TUN fd with IFF_VNET_HDR; non-blocking is fine: a full queue
 * drops that frame) and resets g. Returns packets written; `res` (may be NULL) gets details. */
size_t seng_gro_write(seng_gro *g, int fd, seng_gro_result *res);

/* Writes one packet behind a zero virtio_net_hdr (writev, no copy). Returns bytes of the packet
 * written, or -errno. For a fd opened without IFF_VNET_HDR use write() instead. */
ssize_t seng_tun_write_vnet(int fd, const uint8_t *pkt, size_t len);

/* ---------------------------------------------------------------------------------------------
 * Reading a TUN fd in either mode */

/* Room a read needs: the largest packet (plain) or frame (IFF_VNET_HDR). */
#define SENG_TUN_READ_MAX 65536
#define SENG_TUN_FRAME_MAX (SENG_TUN_READ_MAX + SENG_VNET_HDR_LEN)

/*
 * Reads one packet (vnet_hdr == 0) or one frame (vnet_hdr != 0: the fd has IFF_VNET_HDR) from a
 * TUN fd and leaves plain packets of at most `mtu` bytes back to back in `out`, ends[i] = end
 * offset of packet i (relative to `out`), exactly as seng_gso_split() does.
 *   plain: reads straight into out (needs out_cap >= SENG_TUN_READ_MAX); `frame` is unused and
 *          may be NULL; mtu is not applied (the kernel never reads out more than the link MTU).
 *   vnet:  reads into `frame` (frame_cap >= SENG_TUN_FRAME_MAX), then splits it.
 * Returns the number of packets (>= 1); 0 when a frame was read but refused by seng_gso_split()
 * (malformed/unsupported: count it and read on); -EAGAIN when nothing is queued; -ENOSPC when a
 * buffer is too small (nothing read); another -errno from read() (e.g. -EBADFD: the device is
 * gone).
 */
int seng_tun_read(int fd, int vnet_hdr, size_t mtu, uint8_t *frame, size_t frame_cap, uint8_t *out,
                  size_t out_cap, uint32_t *ends, size_t ends_cap);

/* ---------------------------------------------------------------------------------------------
 * UDP GRO reads (a socket with the UDP_GRO option)
 *
 * One read may return several datagrams of one peer back to back: each gso_size bytes (the value
 * of the read's UDP_GRO control message) but the last, which has 1..gso_size bytes. The bytes
 * are network input and the split must give back exactly the datagrams the peer sent.
 */
#define SENG_UDP_GRO_MAX_SEGS 256 /* the kernel coalesces at most 64 (GRO) or 128 (GSO) */

/* Writes the end offset of each datagram of a read of `len` bytes to ends[] and returns how many
 * (>= 1). gso_size 0 means the read had no UDP_GRO control message: one datagram. Returns
 * -EINVAL when len is 0 or above 65535 or gso_size is negative or above 65535 (not what the
 * kernel hands out), -E2BIG when more than ends_cap datagrams would result; ends is then
 * unchanged. */
int seng_udp_gro_split(size_t len, int gso_size, uint32_t *ends, size_t ends_cap);

#ifdef __cplusplus
}
#endif
#endif /* SENG_NET_H */
