// seng DTLS 1.2 addon: module registration.
//
// Drives the OpenSSL 3 that is linked into the node binary (no library of our own is linked):
//   pipe.cc      the datagram BIO between an SSL object and the UDP socket
//   cookie.cc    stateless HelloVerifyRequest cookies
//   context.cc   SSL_CTX configuration and the stateless listener
//   conn.cc      one association: handshake, held final flight, records
//   record_keys.cc, record_layer.cc  the native record layer of established server sessions
//   tun_forward.cc  the receive tunnel's fast path into the TUN device
//   tun_writer.cc   coalesced (GSO) writes of a receive batch to an offload TUN device
//   tun_dispatch.cc the send tunnel's path from the TUN device, routed by destination IP
//   endpoint.cc  the UDP socket, read in batches with recvmmsg(2) from node's event loop
// Everything but TunDispatch's thread runs on the JavaScript thread; nothing here blocks.
#include <napi.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include "common.h"
#include "conn.h"
#include "context.h"
#include "endpoint.h"
#include "tun_dispatch.h"
#include "tun_writer.h"

namespace seng_dtls {

namespace {

// alertName(code): OpenSSL's long name of an alert description, e.g. "access denied".
Napi::Value AlertName(const Napi::CallbackInfo &info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throwCode(info.Env(), "EDTLS_USAGE", "alertName(code)");
  return Napi::String::New(info.Env(), SSL_alert_desc_string_long(info[0].As<Napi::Number>().Int32Value() & 0xff));
}

// tunWriteStats(fd = -1): the offload TUN writer's counters of fd, or all writers' summed
// (tun_writer.h).
Napi::Value TunWriteStats(const Napi::CallbackInfo &info) {
  const int fd = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : -1;
  const TunWriter::Stats t = TunWriter::totals(fd);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("frames", t.frames);
  o.Set("gsoFrames", t.gsoFrames);
  o.Set("packets", t.packets);
  o.Set("bytes", t.bytes);
  o.Set("dropped", t.dropped);
  o.Set("flushes", t.flushes);
  return o;
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  auto *data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  Napi::Function conn = Conn::Init(env);
  data->connCtor = Napi::Persistent(conn);
  exports.Set("Conn", conn);
  exports.Set("Context", Context::Init(env));
  exports.Set("Endpoint", Endpoint::Init(env));
  exports.Set("TunDispatch", TunDispatch::Init(env));
  exports.Set("nativeStats", Napi::Function::New(env, NativeStats));
  exports.Set("tunWriteStats", Napi::Function::New(env, TunWriteStats));
  exports.Set("openUdp", Napi::Function::New(env, OpenUdp));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd));
  exports.Set("alertName", Napi::Function::New(env, AlertName));
  exports.Set("opensslVersion", Napi::String::New(env, OpenSSL_version(OPENSSL_VERSION)));
  return exports;
}

}  // namespace

}  // namespace seng_dtls

static Napi::Object Init(Napi::Env env, Napi::Object exports) { return seng_dtls::InitModule(env, exports); }

NODE_API_MODULE(seng_dtls, Init)
