// Counters and error helpers shared by the addon (see common.h).
#include "common.h"

#include <openssl/err.h>

namespace seng_dtls {

std::atomic<int64_t> gLiveSsl{0};
std::atomic<int64_t> gLiveCtx{0};
std::atomic<int64_t> gLiveConn{0};
std::atomic<int64_t> gLivePipe{0};
std::atomic<int64_t> gLiveEndpoint{0};
std::atomic<int64_t> gLiveRecordLayer{0};
std::atomic<int64_t> gLiveDispatch{0};
std::atomic<uint64_t> gDirectSends{0};
std::atomic<uint64_t> gDroppedSends{0};
std::atomic<uint64_t> gGsoSends{0};
std::atomic<uint64_t> gGsoRecords{0};
std::atomic<uint64_t> gGroReads{0};
std::atomic<uint64_t> gGroDatagrams{0};
std::atomic<uint64_t> gGroMalformed{0};

std::string drainErrors() {
  std::string msg;
  unsigned long e;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    if (!msg.empty()) msg += "; ";
    msg += buf;
  }
  return msg;
}

void throwCode(Napi::Env env, const char *code, const std::string &message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  throw err;
}

void throwSsl(Napi::Env env, const char *code, const std::string &what) {
  std::string detail = drainErrors();
  throwCode(env, code, detail.empty() ? what : what + ": " + detail);
}

Napi::Value NativeStats(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  auto set = [&](const char *name, double v) { o.Set(name, Napi::Number::New(env, v)); };
  set("liveSsl", static_cast<double>(gLiveSsl.load()));
  set("liveCtx", static_cast<double>(gLiveCtx.load()));
  set("liveConn", static_cast<double>(gLiveConn.load()));
  set("livePipe", static_cast<double>(gLivePipe.load()));
  set("liveEndpoint", static_cast<double>(gLiveEndpoint.load()));
  set("liveRecordLayer", static_cast<double>(gLiveRecordLayer.load()));
  set("liveDispatch", static_cast<double>(gLiveDispatch.load()));
  set("directSends", static_cast<double>(gDirectSends.load()));
  set("droppedSends", static_cast<double>(gDroppedSends.load()));
  set("gsoSends", static_cast<double>(gGsoSends.load()));
  set("gsoRecords", static_cast<double>(gGsoRecords.load()));
  set("groReads", static_cast<double>(gGroReads.load()));
  set("groDatagrams", static_cast<double>(gGroDatagrams.load()));
  set("groMalformed", static_cast<double>(gGroMalformed.load()));
  return o;
}

}  // namespace seng_dtls
