/*
 * seng TUN addon: opens /dev/net/tun (IFF_TUN | IFF_NO_PI), watches the fd with a libuv poll
 * handle on the Node event loop and hands every packet that is ready to JavaScript in ONE
 * callback per wakeup (two Buffers: the packets back to back, and their end offsets), and
 * writes packets without blocking.
 *
 * With OFFLOAD (IFF_VNET_HDR + TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4)) every read starts with a
 * virtio_net_hdr and may be a TCP super-packet of up to 64 KiB: the reader segments it with
 * seng_gso_split() (native/common) so JS still sees plain packets of at most `mtu` bytes; writes
 * get a zero header, and writeBatch() coalesces TCP segments into GSO frames and same-size UDP
 * datagrams of a flow into USO frames (seng_gro_*).
 *
 * JS API (wrapped by src/tunnel/tun.ts; not meant to be used directly):
 *   new TunHandle(name: string, mode: 0 | 1, batchMax: number, flags?: number, mtu?: number)
 *       mode 0 = create a new device (IFF_TUN_EXCL: fails with EBUSY if the name exists),
 *       mode 1 = attach to an existing (pre-created, persistent) device (ENODEV if missing).
 *       flags: 1 = OFFLOAD, 2 = MULTI_QUEUE (IFF_MULTI_QUEUE: one handle per queue, the first
 *       creates, the others attach). mtu: largest packet handed to JS in OFFLOAD mode (1432).
 *       Throws an Error with .code (errno name), .errno, .syscall on failure.
 *   .name                      actual interface name (the kernel fills in patterns like tun%d)
 *   .start(cb)                 cb(slab: Buffer | null, ends: Buffer | null, errno: number) once
 *                              per wakeup: the packets read, back to back in `slab`; `ends`
 *                              holds each packet's end offset as a little-endian uint32.
 *                              errno != 0 means reading failed and the watcher stopped.
 *   .stop()                    stops watching (the fd stays open)
 *   .write(buf) -> number      bytes written, or -errno (-EAGAIN when the queue is full)
 *   .writeBatch(bufs) -> number  packets written (OFFLOAD: TCP segments coalesced into GSO
 *                              frames; otherwise one write() each)
 *   .setMtu(n)                 OFFLOAD segmentation size (68..65535)
 *   .setBatch(n)               max reads per wakeup (1..4096): packets, or frames with OFFLOAD
 *   .ref() / .unref()          whether an active watcher keeps the event loop alive
 *   .stats() -> object         counters
 *   .close()                   stops watching and closes the fd; idempotent
 * Module functions: liveHandles() -> { fds, polls, objects }, ifIndex(name) -> number (0 = none),
 * and the pure packet functions of pure.c (gsoSplit, groCoalesce, ipv4Check; for tests).
 *
 * Threading: everything runs on the JS thread; the poll callback runs from the libuv loop.
 * Memory: the tun_t is owned by the JS wrapper (freed by its finalizer); the uv_poll_t is a
 * separate allocation freed by its uv_close callback, so neither outlives the other's users.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#ifndef TUN_F_USO4 /* Linux 6.2 (older userspace headers lack them) */
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif
#include <net/if.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <sys/uio.h>
#include <uv.h>

#include "../../common/seng_net.h"
#include "pure.h"

/* Largest packet a TUN read can return; a read always gets this much room in the slab, so
 * packets are never truncated. */
#define READ_MAX 65536
#define BATCH_DEFAULT 64
#define BATCH_LIMIT 4096
/* Slab room per batch slot beyond the first READ_MAX: packets up to this size fill a whole
 * batch; bigger ones end the batch early (the rest is read on the next wakeup). */
#define SLAB_PER_PACKET 2048
/* OFFLOAD: room per batch slot (a wakeup may bring super-packets of up to 64 KiB). */
#define SLAB_PER_FRAME 8192
#define ENDS_MAX 4096
#define FLAG_OFFLOAD 1
#define FLAG_MULTI_QUEUE 2

typedef struct {
  napi_env env;
  int fd;             /* -1 once closed */
  uv_poll_t *poll;    /* NULL once closed */
  int polling;
  int in_callback;
  int actx_destroy_pending;
  napi_ref self_ref;  /* strong (1) while polling, weak (0) otherwise */
  napi_ref cb_ref;
  napi_async_context actx;
  uint32_t batch_max;
  int offload;
  int uso;            /* OFFLOAD: the kernel may also hand us UDP super-packets */
  uint32_t mtu;       /* OFFLOAD: segment size limit */
  uint8_t *slab;      /* packets handed to JS: slab_size_for(batch_max, offload) bytes */
  size_t slab_size;
  uint8_t *frame;     /* OFFLOAD: one raw read (virtio_net_hdr + up to 64 KiB) */
  seng_gro *gro;      /* OFFLOAD: coalescing state of writeBatch */
  uint32_t ends[ENDS_MAX];
  char name[IFNAMSIZ];
  /* counters */
  double rx_packets, rx_bytes, rx_wakeups, rx_full_batches, rx_gso, rx_dropped;
  double tx_packets, tx_bytes, tx_eagain, tx_errors, tx_gso;
} tun_t;

static int64_t live_fds = 0;
static int64_t live_polls = 0;
static int64_t live_objects = 0;

/* ------------------------------------------------------------------------------------------ */
/* helpers */

#define CHECK(call)                                                                            \
  do {                                                                                         \
    napi_status status_ = (call);                                                              \
    if (status_ != napi_ok) {                                                                  \
      throw_status(env, status_, #call);                                                       \
      return NULL;                                                                             \
    }                                                                                          \
  } while (0)

static void throw_status(napi_env env, napi_status st, const char *what) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) return;
  char msg[256];
  snprintf(msg, sizeof msg, "tun addon: N-API call failed (status %d): %s", (int)st, what);
  napi_throw_error(env, "ETUNADDON", msg);
}

static const char *errno_name(int e) {
  switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EIO: return "EIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case ENOSPC: return "ENOSPC";
    case EFAULT: return "EFAULT";
    case EMSGSIZE: return "EMSGSIZE";
    case ENOBUFS: return "ENOBUFS";
    case EBADFD: return "EBADFD";
    case ENXIO: return "ENXIO";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    default: return "EUNKNOWN";
  }
}

static void throw_errno(napi_env env, int e, const char *syscall, const char *detail) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s %s: %s", syscall, detail ? detail : "", strerror(e));
  napi_value code, message, err, num, sc;
  if (napi_create_string_utf8(env, errno_name(e), NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message) != napi_ok ||
      napi_create_error(env, code, message, &err) != napi_ok) {
    napi_throw_error(env, errno_name(e), msg);
    return;
  }
  if (napi_create_int32(env, e, &num) == napi_ok) napi_set_named_property(env, err, "errno", num);
  if (napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc) == napi_ok)
    napi_set_named_property(env, err, "syscall", sc);
  napi_throw(env, err);
}

static tun_t *unwrap_this(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv,
                          napi_value *self) {
  napi_value this_arg;
  void *data = NULL;
  if (napi_get_cb_info(env, info, argc, argv, &this_arg, NULL) != napi_ok) {
    throw_status(env, napi_generic_failure, "napi_get_cb_info");
    return NULL;
  }
  if (napi_unwrap(env, this_arg, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, "EINVAL", "TunHandle method called on a foreign object");
    return NULL;
  }
  if (self) *self = this_arg;
  return (tun_t *)data;
}

static void on_poll_closed(uv_handle_t *h) {
  free(h);
  live_polls--;
}

static void destroy_actx(tun_t *t) {
  if (t->actx == NULL) return;
  if (t->in_callback) {
    t->actx_destroy_pending = 1;
    return;
  }
  napi_async_destroy(t->env, t->actx);
  t->actx = NULL;
}

/* Stops the watcher and drops the strong references that kept the wrapper (and, through the
 * callback's closure, usually its owner) alive, so an idle handle can be garbage-collected. */
static void stop_polling(tun_t *t) {
  if (t->poll && t->polling) uv_poll_stop(t->poll);
  if (t->polling) {
    t->polling = 0;
    uint32_t rc = 0;
    if (t->self_ref) napi_reference_unref(t->env, t->self_ref, &rc);
  }
  if (t->cb_ref) {
    napi_delete_reference(t->env, t->cb_ref);
    t->cb_ref = NULL;
  }
}

/* Stops the watcher and closes the fd. Safe to call repeatedly and from within the callback. */
static void close_handle(tun_t *t) {
  stop_polling(t);
  if (t->poll) {
    t->poll->data = NULL;
    uv_close((uv_handle_t *)t->poll, on_poll_closed);
    t->poll = NULL;
  }
  if (t->fd >= 0) {
    close(t->fd);
    t->fd = -1;
    live_fds--;
  }
  destroy_actx(t);
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  tun_t *t = (tun_t *)data;
  close_handle(t);
  if (t->self_ref) {
    napi_delete_reference(t->env, t->self_ref);
    t->self_ref = NULL;
  }
  free(t->slab);
  free(t->frame);
  free(t->gro);
  free(t);
  live_objects--;
}

/* ------------------------------------------------------------------------------------------ */
/* the poll callback: read up to batch_max packets into the slab, deliver them in one JS call
 * as two Buffers (the packets back to back, and their end offsets) */

static size_t slab_size_for(uint32_t batch, int offload) {
  return offload ? SENG_GSO_SPLIT_ROOM + (size_t)batch * SLAB_PER_FRAME
                 : READ_MAX + (size_t)batch * SLAB_PER_PACKET;
}

/* TUNSETOFFLOAD for an IFF_VNET_HDR fd: checksum-partial packets and TCPv4 super-packets, and
 * UDP super-packets where the kernel has them (USO is only taken for IPv4 and IPv6 together)
 * and seng_tun_uso_allowed(). Returns 1 with USO, 0 without, -1 (errno set) on failure. */
static int set_offloads(int fd) {
  const unsigned long base = TUN_F_CSUM | TUN_F_TSO4;
  if (seng_tun_uso_allowed() && ioctl(fd, TUNSETOFFLOAD, base | TUN_F_USO4 | TUN_F_USO6) == 0) return 1;
  return ioctl(fd, TUNSETOFFLOAD, base) == 0 ? 0 : -1;
}

/* Reads one packet (plain mode) or one frame, segmented into packets (OFFLOAD), into the slab at
 * *off. Returns the packets added (0 for a dropped frame), -1 at EAGAIN/EOF, -2 on an error
 * (*err set). */
static int read_one(tun_t *t, size_t *off, uint32_t *n, int *err) {
  int k = seng_tun_read(t->fd, t->offload, t->mtu, t->frame, t->frame ? SENG_TUN_FRAME_MAX : 0,
                        t->slab + *off, t->slab_size - *off, t->ends + *n, ENDS_MAX - *n);
  if (k == -EAGAIN) return -1;
  if (k < 0) {
    *err = -k;
    return -2;
  }
  if (k == 0) {
    t->rx_dropped += 1; /* malformed or unsupported frame from the kernel: skip it */
    return 0;
  }
  if (k > 1) t->rx_gso += 1;
  /* ends are relative to slab + *off: make them slab offsets (< slab_size < 2^32). */
  for (int i = 0; i < k; i++) t->ends[*n + (uint32_t)i] += (uint32_t)*off;
  *n += (uint32_t)k;
  size_t end = t->ends[*n - 1];
  t->rx_packets += k;
  t->rx_bytes += (double)(end - *off);
  *off = end;
  return k;
}

/* Whether the slab and the ends array can take one more read. */
static int has_room(const tun_t *t, size_t off, uint32_t n) {
  if (!t->offload) return n < ENDS_MAX && t->slab_size - off >= READ_MAX;
  return ENDS_MAX - n >= SENG_GSO_MAX_SEGS && t->slab_size - off >= SENG_GSO_SPLIT_ROOM;
}

static void on_readable(uv_poll_t *h, int status, int events) {
  (void)events;
  tun_t *t = (tun_t *)h->data;
  if (t == NULL || t->fd < 0 || !t->polling) return;
  napi_env env = t->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;

  napi_value self = NULL, cb = NULL;
  uint32_t n = 0;
  size_t off = 0;
  int err = 0;
  if (napi_get_reference_value(env, t->self_ref, &self) != napi_ok || self == NULL ||
      napi_get_reference_value(env, t->cb_ref, &cb) != napi_ok || cb == NULL) {
    napi_close_handle_scope(env, scope);
    return;
  }
  if (status < 0) {
    err = (status == UV_EBADF) ? EBADFD : -status;
  } else {
    int drained = 0;
    /* batch_max counts reads: with OFFLOAD one read may bring up to SENG_GSO_MAX_SEGS packets. */
    for (uint32_t reads = 0; reads < t->batch_max && has_room(t, off, n); reads++) {
      int k = read_one(t, &off, &n, &err);
      if (k == -1) drained = 1;
      if (k < 0) break;
    }
    if (n > 0) t->rx_wakeups += 1;
    if (!drained && err == 0) t->rx_full_batches += 1;
  }
  if (n == 0 && err == 0) { /* spurious wakeup */
    napi_close_handle_scope(env, scope);
    return;
  }
  if (err != 0) stop_polling(t);

  napi_value argv[3];
  if (n > 0) {
    if (napi_create_buffer_copy(env, off, t->slab, NULL, &argv[0]) != napi_ok ||
        napi_create_buffer_copy(env, (size_t)n * sizeof(uint32_t), t->ends, NULL, &argv[1]) != napi_ok) {
      /* Out of memory: these packets are lost; keep the watcher running. */
      napi_close_handle_scope(env, scope);
      return;
    }
  } else {
    napi_get_null(env, &argv[0]);
    napi_get_null(env, &argv[1]);
  }
  napi_create_int32(env, err, &argv[2]);
  t->in_callback = 1;
  napi_status st = napi_make_callback(env, t->actx, self, cb, 3, argv, NULL);
  t->in_callback = 0;
  if (t->actx_destroy_pending && t->actx) {
    napi_async_destroy(env, t->actx);
    t->actx = NULL;
    t->actx_destroy_pending = 0;
  }
  if (st == napi_pending_exception) {
    napi_value exc;
    if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
  }
  napi_close_handle_scope(env, scope);
}

/* ------------------------------------------------------------------------------------------ */
/* methods */

static napi_value tun_new(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], this_arg, target;
  CHECK(napi_get_cb_info(env, info, &argc, argv, &this_arg, NULL));
  CHECK(napi_get_new_target(env, info, &target));
  if (target == NULL) {
    napi_throw_type_error(env, "EINVAL", "TunHandle must be called with new");
    return NULL;
  }
  if (argc < 2) {
    napi_throw_type_error(env, "EINVAL", "TunHandle(name, mode[, batchMax])");
    return NULL;
  }
  char name[IFNAMSIZ + 1];
  size_t name_len = 0;
  if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &name_len) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "name must be a string");
    return NULL;
  }
  if (name_len == 0 || name_len >= IFNAMSIZ) {
    napi_throw_range_error(env, "EINVAL", "interface name must be 1..15 bytes");
    return NULL;
  }
  int32_t mode = 0;
  if (napi_get_value_int32(env, argv[1], &mode) != napi_ok || (mode != 0 && mode != 1)) {
    napi_throw_type_error(env, "EINVAL", "mode must be 0 (create) or 1 (attach)");
    return NULL;
  }
  uint32_t batch = BATCH_DEFAULT;
  if (argc >= 3) {
    napi_valuetype vt;
    CHECK(napi_typeof(env, argv[2], &vt));
    if (vt != napi_undefined) {
      if (napi_get_value_uint32(env, argv[2], &batch) != napi_ok || batch < 1 || batch > BATCH_LIMIT) {
        napi_throw_range_error(env, "EINVAL", "batchMax must be 1..4096");
        return NULL;
      }
    }
  }
  uint32_t flags = 0, mtu = 1500;
  if (argc >= 4 && (napi_get_value_uint32(env, argv[3], &flags) != napi_ok || flags > 3)) {
    napi_throw_range_error(env, "EINVAL", "flags must be 0..3");
    return NULL;
  }
  if (argc >= 5 && (napi_get_value_uint32(env, argv[4], &mtu) != napi_ok || mtu < 68 || mtu > 65535)) {
    napi_throw_range_error(env, "EINVAL", "mtu must be 68..65535");
    return NULL;
  }
  int offload = (flags & FLAG_OFFLOAD) != 0;

  if (mode == 1 && if_nametoindex(name) == 0) {
    throw_errno(env, ENODEV, "attach", name);
    return NULL;
  }
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    throw_errno(env, errno, "open", "/dev/net/tun");
    return NULL;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = (short)(IFF_TUN | IFF_NO_PI | (mode == 0 ? IFF_TUN_EXCL : 0) |
                          (offload ? IFF_VNET_HDR : 0) |
                          ((flags & FLAG_MULTI_QUEUE) ? IFF_MULTI_QUEUE : 0));
  memcpy(ifr.ifr_name, name, name_len); /* name_len < IFNAMSIZ: stays NUL-terminated */
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    throw_errno(env, e, "ioctl(TUNSETIFF)", name);
    return NULL;
  }
  /* The kernel may now hand us checksum-partial packets, TCPv4 super-packets and (Linux >= 6.2,
   * which takes USO only for both IP versions at once) UDP super-packets: a local sender's
   * UDP_SEGMENT runs, or a flow's datagrams merged by GRO forwarding on the way in. Older kernels
   * refuse the USO bits with EINVAL: then TSO only. */
  const int uso = offload ? set_offloads(fd) : 0;
  if (uso < 0) {
    int e = errno;
    close(fd);
    throw_errno(env, e, "ioctl(TUNSETOFFLOAD)", name);
    return NULL;
  }

  tun_t *t = calloc(1, sizeof *t);
  uint8_t *slab = malloc(slab_size_for(batch, offload));
  uint8_t *frame = offload ? malloc(SENG_TUN_FRAME_MAX) : NULL;
  seng_gro *gro = offload ? malloc(sizeof *gro) : NULL;
  uv_poll_t *poll = malloc(sizeof *poll);
  uv_loop_t *loop = NULL;
  if (t == NULL || slab == NULL || poll == NULL || (offload && (frame == NULL || gro == NULL)) ||
      napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, poll, fd) != 0) {
    free(t);
    free(slab);
    free(frame);
    free(gro);
    free(poll);
    close(fd);
    throw_errno(env, ENOMEM, "init", name);
    return NULL;
  }
  live_fds++;
  live_polls++;
  live_objects++;
  t->env = env;
  t->fd = fd;
  t->poll = poll;
  t->slab = slab;
  t->slab_size = slab_size_for(batch, offload);
  t->batch_max = batch;
  t->offload = offload;
  t->uso = uso;
  t->mtu = mtu;
  t->frame = frame;
  t->gro = gro;
  if (gro) seng_gro_init(gro);
  poll->data = t;
  memcpy(t->name, ifr.ifr_name, IFNAMSIZ);
  t->name[IFNAMSIZ - 1] = '\0';

  napi_value resource_name;
  if (napi_create_string_utf8(env, "seng:TunHandle", NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_async_init(env, NULL, resource_name, &t->actx) != napi_ok ||
      napi_wrap(env, this_arg, t, finalize, NULL, &t->self_ref) != napi_ok) {
    close_handle(t);
    if (t->self_ref) napi_delete_reference(env, t->self_ref);
    free(t->slab);
    free(t->frame);
    free(t->gro);
    free(t);
    live_objects--;
    throw_status(env, napi_generic_failure, "TunHandle setup");
    return NULL;
  }
  /* napi_wrap with a result ref gives a weak reference (count 0). */
  napi_value nm;
  CHECK(napi_create_string_utf8(env, t->name, NAPI_AUTO_LENGTH, &nm));
  napi_property_descriptor p = {"name", NULL, NULL, NULL, NULL, nm, napi_enumerable, NULL};
  CHECK(napi_define_properties(env, this_arg, 1, &p));
  return this_arg;
}

static napi_value tun_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  tun_t *t = unwrap_this(env, info, &argc, argv, NULL);
  if (t == NULL) return NULL;
  napi_valuetype vt = napi_undefined;
  if (argc < 1 || napi_typeof(env, argv[0], &vt) != napi_ok || vt != napi_function) {
    napi_throw_type_error(env, "EINVAL", "start(callback) needs a function");
    return NULL;
  }
  if (t->fd < 0) {
    throw_errno(env, EBADF, "start", t->name);
    return NULL;
  }
  if (t->cb_ref) napi_delete_reference(env, t->cb_ref);
  t->cb_ref = NULL;
  CHECK(napi_create_reference(env, argv[0], 1, &t->cb_ref));
  if (!t->polling) {
    int r = uv_poll_start(t->poll, UV_READABLE, on_readable);
    if (r != 0) {
      throw_errno(env, -r, "uv_poll_start", t->name);
      return NULL;
    }
    t->polling = 1;
    uint32_t rc = 0;
    CHECK(napi_reference_ref(env, t->self_ref, &rc));
  }
  return NULL;
}

static napi_value tun_stop(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_t *t = unwrap_this(env, info, &argc, NULL, NULL);
  if (t == NULL) return NULL;
  stop_polling(t);
  return NULL;
}

static napi_value tun_close(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_t *t = unwrap_this(env, info, &argc, NULL, NULL);
  if (t == NULL) return NULL;
  close_handle(t);
  return NULL;
}

static ssize_t write_one(tun_t *t, const void *data, size_t len) {
  if (t->fd < 0) return -EBADF;
  ssize_t r;
  if (t->offload) {
    r = seng_tun_write_vnet(t->fd, data, len);
    if (r < 0) {
      errno = (int)-r;
      r = -1;
    }
  } else {
    do {
      r = write(t->fd, data, len);
    } while (r < 0 && errno == EINTR);
  }
  if (r < 0) {
    int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      t->tx_eagain += 1;
      return -EAGAIN;
    }
    t->tx_errors += 1;
    return -e;
  }
  t->tx_packets += 1;
  t->tx_bytes += (double)r;
  return r;
}

static int get_bytes(napi_env env, napi_value v, void **data, size_t *len) {
  bool is = false;
  if (napi_is_buffer(env, v, &is) == napi_ok && is) return napi_get_buffer_info(env, v, data, len) == napi_ok;
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type type;
    size_t count = 0, offset = 0;
    napi_value ab;
    if (napi_get_typedarray_info(env, v, &type, &count, data, &ab, &offset) != napi_ok) return 0;
    if (type != napi_uint8_array) return 0;
    *len = count;
    return 1;
  }
  return 0;
}

static napi_value tun_write(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  tun_t *t = unwrap_this(env, info, &argc, argv, NULL);
  if (t == NULL) return NULL;
  void *data = NULL;
  size_t len = 0;
  if (argc < 1 || !get_bytes(env, argv[0], &data, &len)) {
    napi_throw_type_error(env, "EINVAL", "write(packet) needs a Buffer or Uint8Array");
    return NULL;
  }
  napi_value out;
  CHECK(napi_create_int64(env, (int64_t)write_one(t, data, len), &out));
  return out;
}

/* Writes the coalesced frames and accounts for them; returns packets written. */
static uint32_t flush_gro(tun_t *t, int *fatal) {
  seng_gro_result res;
  seng_gro_write(t->gro, t->fd, &res);
  t->tx_packets += res.packets_written;
  t->tx_bytes += res.bytes_written;
  t->tx_gso += res.frames_gso;
  t->tx_eagain += res.frames_eagain;
  t->tx_errors += res.frames_failed;
  if (res.frames_failed && (res.last_errno == EBADFD || res.last_errno == EBADF)) *fatal = res.last_errno;
  return res.packets_written;
}

/* writeBatch(packets: Uint8Array[]) -> packets written, or -errno when the device is gone. */
static napi_value tun_write_batch(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  tun_t *t = unwrap_this(env, info, &argc, argv, NULL);
  if (t == NULL) return NULL;
  bool is_array = false;
  uint32_t count = 0;
  if (argc < 1 || napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[0], &count) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "writeBatch(packets) needs an array of Uint8Arrays");
    return NULL;
  }
  int64_t written = 0;
  int fatal = t->fd < 0 ? EBADF : 0;
  for (uint32_t i = 0; i < count && !fatal; i++) {
    napi_value v;
    void *data = NULL;
    size_t len = 0;
    if (napi_get_element(env, argv[0], i, &v) != napi_ok || !get_bytes(env, v, &data, &len)) {
      if (t->gro) seng_gro_init(t->gro);
      napi_throw_type_error(env, "EINVAL", "writeBatch(packets) needs an array of Uint8Arrays");
      return NULL;
    }
    if (!t->offload) {
      ssize_t r = write_one(t, data, len);
      if (r >= 0) written++;
      else if (r == -EBADF || r == -EBADFD) fatal = (int)-r;
      continue;
    }
    /* The Buffers stay alive (argv holds them) until the flush at the end of this call. */
    int a = seng_gro_add(t->gro, data, len);
    if (a == -ENOSPC) {
      written += flush_gro(t, &fatal);
      a = seng_gro_add(t->gro, data, len);
    }
    if (a < 0) t->tx_errors += 1;
  }
  if (t->offload) {
    if (fatal) seng_gro_init(t->gro);
    else written += flush_gro(t, &fatal);
  }
  napi_value out;
  CHECK(napi_create_int64(env, fatal ? -(int64_t)fatal : written, &out));
  return out;
}

static napi_value tun_set_mtu(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  tun_t *t = unwrap_this(env, info, &argc, argv, NULL);
  if (t == NULL) return NULL;
  uint32_t mtu = 0;
  if (argc < 1 || napi_get_value_uint32(env, argv[0], &mtu) != napi_ok || mtu < 68 || mtu > 65535) {
    napi_throw_range_error(env, "EINVAL", "mtu must be 68..65535");
    return NULL;
  }
  t->mtu = mtu;
  return NULL;
}

static napi_value tun_set_batch(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  tun_t *t = unwrap_this(env, info, &argc, argv, NULL);
  if (t == NULL) return NULL;
  uint32_t b = 0;
  if (argc < 1 || napi_get_value_uint32(env, argv[0], &b) != napi_ok || b < 1 || b > BATCH_LIMIT) {
    napi_throw_range_error(env, "EINVAL", "batchMax must be 1..4096");
    return NULL;
  }
  /* Safe during the callback too: on_readable copied the slab before calling into JS. */
  uint8_t *slab = realloc(t->slab, slab_size_for(b, t->offload));
  if (slab == NULL) {
    throw_errno(env, ENOMEM, "setBatch", t->name);
    return NULL;
  }
  t->slab = slab;
  t->slab_size = slab_size_for(b, t->offload);
  t->batch_max = b;
  return NULL;
}

static napi_value tun_ref_impl(napi_env env, napi_callback_info info, int ref) {
  size_t argc = 0;
  tun_t *t = unwrap_this(env, info, &argc, NULL, NULL);
  if (t == NULL) return NULL;
  if (t->poll) {
    if (ref) uv_ref((uv_handle_t *)t->poll);
    else uv_unref((uv_handle_t *)t->poll);
  }
  return NULL;
}
static napi_value tun_ref(napi_env env, napi_callback_info info) { return tun_ref_impl(env, info, 1); }
static napi_value tun_unref(napi_env env, napi_callback_info info) { return tun_ref_impl(env, info, 0); }

static int set_num(napi_env env, napi_value obj, const char *key, double v) {
  napi_value n;
  return napi_create_double(env, v, &n) == napi_ok && napi_set_named_property(env, obj, key, n) == napi_ok;
}

/* The device fd (-1 once closed), for a native forwarder that writes packets to it. */
static napi_value tun_fd(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_t *t = unwrap_this(env, info, &argc, NULL, NULL);
  if (t == NULL) return NULL;
  napi_value out;
  CHECK(napi_create_int32(env, t->fd, &out));
  return out;
}

static napi_value tun_stats(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  tun_t *t = unwrap_this(env, info, &argc, NULL, NULL);
  if (t == NULL) return NULL;
  napi_value o;
  CHECK(napi_create_object(env, &o));
  if (!set_num(env, o, "rxPackets", t->rx_packets) || !set_num(env, o, "rxBytes", t->rx_bytes) ||
      !set_num(env, o, "rxWakeups", t->rx_wakeups) || !set_num(env, o, "rxFullBatches", t->rx_full_batches) ||
      !set_num(env, o, "txPackets", t->tx_packets) || !set_num(env, o, "txBytes", t->tx_bytes) ||
      !set_num(env, o, "txEagain", t->tx_eagain) || !set_num(env, o, "txErrors", t->tx_errors) ||
      !set_num(env, o, "rxGso", t->rx_gso) || !set_num(env, o, "rxDropped", t->rx_dropped) ||
      !set_num(env, o, "txGso", t->tx_gso)) {
    throw_status(env, napi_generic_failure, "stats");
    return NULL;
  }
  napi_value b;
  CHECK(napi_get_boolean(env, t->fd >= 0, &b));
  CHECK(napi_set_named_property(env, o, "open", b));
  CHECK(napi_get_boolean(env, t->polling != 0, &b));
  CHECK(napi_set_named_property(env, o, "reading", b));
  CHECK(napi_get_boolean(env, t->uso != 0, &b));
  CHECK(napi_set_named_property(env, o, "uso", b));
  return o;
}

static napi_value live_handles(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value o;
  CHECK(napi_create_object(env, &o));
  if (!set_num(env, o, "fds", (double)live_fds) || !set_num(env, o, "polls", (double)live_polls) ||
      !set_num(env, o, "objects", (double)live_objects)) {
    throw_status(env, napi_generic_failure, "liveHandles");
    return NULL;
  }
  return o;
}

static napi_value if_index(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char name[IFNAMSIZ + 1];
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "ifIndex(name) needs a string");
    return NULL;
  }
  napi_value out;
  CHECK(napi_create_uint32(env, (len == 0 || len >= IFNAMSIZ) ? 0 : if_nametoindex(name), &out));
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"start", NULL, tun_start, NULL, NULL, NULL, napi_default, NULL},
      {"stop", NULL, tun_stop, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, tun_close, NULL, NULL, NULL, napi_default, NULL},
      {"write", NULL, tun_write, NULL, NULL, NULL, napi_default, NULL},
      {"writeBatch", NULL, tun_write_batch, NULL, NULL, NULL, napi_default, NULL},
      {"setMtu", NULL, tun_set_mtu, NULL, NULL, NULL, napi_default, NULL},
      {"setBatch", NULL, tun_set_batch, NULL, NULL, NULL, napi_default, NULL},
      {"ref", NULL, tun_ref, NULL, NULL, NULL, napi_default, NULL},
      {"unref", NULL, tun_unref, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, tun_stats, NULL, NULL, NULL, napi_default, NULL},
      {"fd", NULL, tun_fd, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value cls;
  CHECK(napi_define_class(env, "TunHandle", NAPI_AUTO_LENGTH, tun_new, NULL,
                          sizeof methods / sizeof methods[0], methods, &cls));
  napi_property_descriptor props[] = {
      {"TunHandle", NULL, NULL, NULL, NULL, cls, napi_enumerable, NULL},
      {"liveHandles", NULL, live_handles, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ifIndex", NULL, if_index, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  if (!register_pure_functions(env, exports)) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
