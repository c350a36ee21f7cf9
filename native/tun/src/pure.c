/*
 * JS bindings of the pure packet functions in native/common/seng_net.c, so unit tests can drive
 * segmentation and coalescing with crafted packets (no device needed):
 *   gsoSplit(frame: Uint8Array, mtu: number) -> { slab: Buffer, ends: Buffer } | number
 *       frame = virtio_net_hdr + packet; slab = the packets back to back, ends = uint32 LE end
 *       offsets; a negative errno when seng_gso_split() refuses the frame.
 *   groCoalesce(packets: Uint8Array[]) -> Buffer[]
 *       the frames (virtio_net_hdr + packet) that seng_gro_write() would write, in order.
 *   ipv4Check(packet) -> number          seng_ipv4_check()
 *   l4ChecksumOk(packet) -> boolean      seng_ipv4_l4_csum_ok()
 *   udpGroSplit(len, gsoSize) -> number[] | number
 *       seng_udp_gro_split(): the end offsets of the datagrams of a UDP GRO read, or a
 *       negative errno.
 */
#include "pure.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "../../common/seng_net.h"

static int bytes_of(napi_env env, napi_value v, void **data, size_t *len) {
  bool is = false;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return 0;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset = 0;
  if (napi_get_typedarray_info(env, v, &type, len, data, &ab, &offset) != napi_ok) return 0;
  return type == napi_uint8_array;
}

static napi_value fail(napi_env env, const char *msg) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw_type_error(env, "EINVAL", msg);
  return NULL;
}

static napi_value js_gso_split(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  void *frame = NULL;
  size_t len = 0;
  uint32_t mtu = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      !bytes_of(env, argv[0], &frame, &len) || napi_get_value_uint32(env, argv[1], &mtu) != napi_ok)
    return fail(env, "gsoSplit(frame: Uint8Array, mtu: number)");
  uint8_t *out = malloc(SENG_GSO_SPLIT_ROOM);
  uint32_t *ends = malloc(SENG_GSO_MAX_SEGS * sizeof *ends);
  napi_value result = NULL;
  int n = out && ends ? seng_gso_split(frame, len, mtu, out, SENG_GSO_SPLIT_ROOM, ends,
                                       SENG_GSO_MAX_SEGS)
                      : -ENOMEM;
  if (n <= 0) {
    napi_create_int32(env, n, &result);
  } else {
    napi_value slab, endsBuf;
    if (napi_create_object(env, &result) != napi_ok ||
        napi_create_buffer_copy(env, ends[n - 1], out, NULL, &slab) != napi_ok ||
        napi_create_buffer_copy(env, (size_t)n * sizeof *ends, ends, NULL, &endsBuf) != napi_ok ||
        napi_set_named_property(env, result, "slab", slab) != napi_ok ||
        napi_set_named_property(env, result, "ends", endsBuf) != napi_ok)
      result = fail(env, "gsoSplit: out of memory");
  }
  free(out);
  free(ends);
  return result;
}

/* Copies frame i of g into a new Buffer. */
static napi_value frame_buffer(napi_env env, seng_gro *g, size_t i, struct iovec *iov) {
  size_t flen = 0;
  int n = seng_gro_frame_iov(g, i, iov, 1 + SENG_GRO_MAX_PKTS, &flen);
  void *data = NULL;
  napi_value buf;
  if (n < 0 || napi_create_buffer(env, flen, &data, &buf) != napi_ok) return NULL;
  size_t off = 0;
  for (int k = 0; k < n; k++) {
    memcpy((uint8_t *)data + off, iov[k].iov_base, iov[k].iov_len);
    off += iov[k].iov_len;
  }
  return buf;
}

static napi_value js_gro_coalesce(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool is_array = false;
  uint32_t count = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[0], &count) != napi_ok || count > SENG_GRO_MAX_PKTS)
    return fail(env, "groCoalesce(packets: Uint8Array[]) (at most 256)");
  seng_gro *g = malloc(sizeof *g);
  struct iovec *iov = malloc((1 + SENG_GRO_MAX_PKTS) * sizeof *iov);
  napi_value result = NULL;
  if (g == NULL || iov == NULL) goto out;
  seng_gro_init(g);
  for (uint32_t i = 0; i < count; i++) {
    napi_value v;
    void *data = NULL;
    size_t len = 0;
    if (napi_get_element(env, argv[0], i, &v) != napi_ok || !bytes_of(env, v, &data, &len) ||
        seng_gro_add(g, data, len) != 0)
      goto out;
  }
  napi_value arr;
  if (napi_create_array_with_length(env, seng_gro_frames(g), &arr) != napi_ok) goto out;
  for (size_t i = 0; i < seng_gro_frames(g); i++) {
    napi_value buf = frame_buffer(env, g, i, iov);
    if (buf == NULL || napi_set_element(env, arr, (uint32_t)i, buf) != napi_ok) goto out;
  }
  result = arr;
out:
  free(g);
  free(iov);
  return result ? result : fail(env, "groCoalesce: bad packet (empty or > 65535 bytes)");
}

static napi_value js_ipv4_check(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  void *data = NULL;
  size_t len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      !bytes_of(env, argv[0], &data, &len))
    return fail(env, "ipv4Check(packet: Uint8Array)");
  if (napi_create_int32(env, seng_ipv4_check(data, len), &out) != napi_ok) return NULL;
  return out;
}

static napi_value js_l4_csum_ok(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  void *data = NULL;
  size_t len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      !bytes_of(env, argv[0], &data, &len))
    return fail(env, "l4ChecksumOk(packet: Uint8Array)");
  if (napi_get_boolean(env, seng_ipv4_l4_csum_ok(data, len) != 0, &out) != napi_ok) return NULL;
  return out;
}

static napi_value js_udp_gro_split(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  double len = -1, gso = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_double(env, argv[0], &len) != napi_ok ||
      napi_get_value_double(env, argv[1], &gso) != napi_ok || !(len >= 0 && len <= 1e9) ||
      !(gso >= -1e9 && gso <= 1e9))
    return fail(env, "udpGroSplit(len: number, gsoSize: number)");
  uint32_t ends[SENG_UDP_GRO_MAX_SEGS];
  const int n = seng_udp_gro_split((size_t)len, (int)gso, ends, SENG_UDP_GRO_MAX_SEGS);
  if (n < 0) {
    if (napi_create_int32(env, n, &out) != napi_ok) return NULL;
    return out;
  }
  if (napi_create_array_with_length(env, (size_t)n, &out) != napi_ok) return NULL;
  for (int i = 0; i < n; i++) {
    napi_value v;
    if (napi_create_uint32(env, ends[i], &v) != napi_ok || napi_set_element(env, out, (uint32_t)i, v) != napi_ok)
      return NULL;
  }
  return out;
}

int register_pure_functions(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"gsoSplit", NULL, js_gso_split, NULL, NULL, NULL, napi_enumerable, NULL},
      {"groCoalesce", NULL, js_gro_coalesce, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ipv4Check", NULL, js_ipv4_check, NULL, NULL, NULL, napi_enumerable, NULL},
      {"l4ChecksumOk", NULL, js_l4_csum_ok, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpGroSplit", NULL, js_udp_gro_split, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props) == napi_ok;
}
