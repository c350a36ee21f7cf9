// Conn: one DTLS association (see conn.h).
#include "conn.h"

#include <openssl/err.h>
#include <openssl/x509.h>

#include <climits>
#include <cstring>

namespace seng_dtls {

namespace {

struct ConnInit {
  SSL *ssl;
  std::unique_ptr<Pipe> pipe;
  std::shared_ptr<SharedContext> shared;
};

// Bytes [offset, offset + length) of a Buffer argument pair, bounds-checked; false if absent.
bool datagramRange(Napi::Env env, const Napi::CallbackInfo &info, size_t first, size_t total, size_t *off,
                   size_t *len) {
  if (info.Length() < first + 2 || !info[first].IsNumber() || !info[first + 1].IsNumber()) return false;
  double o = info[first].As<Napi::Number>().DoubleValue();
  double l = info[first + 1].As<Napi::Number>().DoubleValue();
  if (!(o >= 0) || !(l >= 0) || o + l > static_cast<double>(total))
    throwCode(env, "EDTLS_USAGE", "datagram range out of bounds");
  *off = static_cast<size_t>(o);
  *len = static_cast<size_t>(l);
  return true;
}

}  // namespace

Napi::Function Conn::Init(Napi::Env env) {
  return DefineClass(env, "Conn",
                     {
                         InstanceMethod<&Conn::Input>("input"),
                         InstanceMethod<&Conn::Timeout>("timeout"),
                         InstanceMethod<&Conn::NextTimeout>("nextTimeout"),
                         InstanceMethod<&Conn::Release>("release"),
                         InstanceMethod<&Conn::HandOff>("handOff"),
                         InstanceMethod<&Conn::Reject>("reject"),
                         InstanceMethod<&Conn::Send>("send"),
                         InstanceMethod<&Conn::Shutdown>("shutdown"),
                         InstanceMethod<&Conn::PeerChain>("peerChain"),
                         InstanceMethod<&Conn::Info>("info"),
                         InstanceMethod<&Conn::SetForward>("setForward"),
                         InstanceMethod<&Conn::ForwardStats>("forwardStats"),
                         InstanceMethod<&Conn::Free>("free"),
                     });
}

Napi::Object Conn::Create(Napi::Env env, SSL *ssl, std::unique_ptr<Pipe> pipe, std::shared_ptr<SharedContext> shared) {
  ConnInit init{ssl, std::move(pipe), std::move(shared)};
  auto *data = env.GetInstanceData<AddonData>();
  try {
    return data->connCtor.New({Napi::External<ConnInit>::New(env, &init)});
  } catch (...) {
    if (init.ssl != nullptr) {  // the constructor did not take ownership
      SSL_free(init.ssl);
      --gLiveSsl;
    }
    throw;
  }
}

Conn::Conn(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Conn>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throwCode(info.Env(), "EDTLS_USAGE", "Conn objects are made by Context.listen() / Context.connect()");
  auto *init = info[0].As<Napi::External<ConnInit>>().Data();
  if (init == nullptr || init->ssl == nullptr) throwCode(info.Env(), "EDTLS_USAGE", "bad Conn init");
  ssl_ = init->ssl;
  pipe_ = std::move(init->pipe);
  shared_ = std::move(init->shared);
  init->ssl = nullptr;
  server_ = shared_->server;
  ++gLiveConn;
}

Conn *Conn::FromValue(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) return nullptr;
  auto *data = env.GetInstanceData<AddonData>();
  if (data == nullptr || !v.As<Napi::Object>().InstanceOf(data->connCtor.Value())) return nullptr;
  return Conn::Unwrap(v.As<Napi::Object>());
}

bool Conn::sendPath(std::weak_ptr<RecordLayer> *rl, sockaddr_storage *peer, socklen_t *peerLen) const {
  if (!rl_ || !pipe_ || state_ != State::Open) return false;
  *rl = rl_;
  *peer = pipe_->peer;
  *peerLen = pipe_->peerLen;
  return true;
}

bool Conn::recvPath(std::weak_ptr<RecordLayer> *rl, TunForwarder *forward) const {
  if (!rl_ || state_ != State::Open || !forward_.enabled()) return false;
  *rl = rl_;
  *forward = forward_;
  return true;
}

Conn::~Conn() {
  release();
  --gLiveConn;
}

void Conn::freeSsl() {
  if (ssl_ == nullptr) return;
  SSL_free(ssl_);
  ssl_ = nullptr;
  --gLiveSsl;
}

void Conn::release() {
  freeSsl();
  rl_.reset();
  pipe_.reset();
  shared_.reset();
  dropFlight();
  std::vector<uint8_t>().swap(pending_);
  state_ = State::Closed;
}

// Server, verdict accepted (release()), or client, once its setup records are read (handOff()): keys
// and sequence numbers to the native record layer, SSL object freed. deriveRecordKeys takes our
// direction of the key block from server_.
bool Conn::handOff() {
  RecordKeys keys;
  std::string err;
  if (!deriveRecordKeys(ssl_, server_, &keys, &err)) {
    error_ = err;
    return false;
  }
  // Our records in epoch 1 so far (the Finished) came from the SSL object: continue after them.
  rl_ = RecordLayer::create(keys, pipe_->nextSeq(1), &err);
  if (!rl_) {
    error_ = err;
    return false;
  }
  freeSsl();
  ERR_clear_error();
  return true;
}

bool Conn::sealAndSend(uint8_t type, const uint8_t *p, size_t n) {
  uint8_t record[kMaxPlain + RecordLayer::kOverhead];
  const size_t len = rl_->seal(type, p, n, record);
  if (len == 0) return false;
  emitDatagram(pipe_.get(), record, len);
  return true;
}

void Conn::sendAlert(uint8_t level, uint8_t description) {
  const uint8_t alert[2] = {level, description};
  if (sealAndSend(kAlert, alert, sizeof alert)) pipe_->alertSent = (level << 8) | description;
}

void Conn::resendFlight() {
  size_t start = 0;
  for (size_t end : flightEnds_) {
    emitDatagram(pipe_.get(), flight_.data() + start, end - start);
    start = end;
  }
}

void Conn::dropFlight() {
  std::vector<uint8_t>().swap(flight_);
  std::vector<size_t>().swap(flightEnds_);
}

// An authenticated alert or handshake record after the handoff. Returns flags that end the
// association (F_PEER_CLOSED, F_FATAL) or 0.
uint32_t Conn::onControlRecord(uint8_t type, const uint8_t *p, size_t n) {
  if (type == kAlert) {
    if (n < 2) return 0;
    pipe_->alertRecv = (p[0] << 8) | p[1];
    if (p[1] == 0) {  // close_notify: ours in reply
      sendAlert(1, 0);
      state_ = State::Closed;
      return F_PEER_CLOSED;
    }
    if (p[0] == 2) {
      error_ = std::string("fatal alert received: ") + SSL_alert_desc_string_long(p[1]);
      state_ = State::Closed;
      return F_FATAL;
    }
    return 0;  // other warnings change nothing
  }
  if (type == kHandshake && n >= 1) {
    // The client's retransmitted Finished: it has not seen ours. Anything else is a renegotiation
    // attempt, refused like SSL_OP_NO_RENEGOTIATION does.
    if (p[0] == 20) {
      if (!flight_.empty()) resendFlight();
      return 0;
    }
    sendAlert(1, 100);  // no_renegotiation (warning)
  }
  return 0;
}

// Opens the records of datagram d[0, n) into slab[off..] (lens[i] = length of record i) or to
// the TUN forwarder. Records that do not open are discarded silently (RFC 6347 §4.1.2.7).
uint32_t Conn::openRecords(const uint8_t *d, size_t n, uint8_t *slab, size_t slabLen, size_t off, uint32_t *lens,
                           size_t maxCount, uint32_t *count) {
  size_t pos = 0;
  while (pos < n) {
    const size_t len = RecordLayer::framedLength(d + pos, n - pos);
    if (len == 0) {  // a truncated record: the rest of the datagram is garbage
      discardedOther_ += 1;
      break;
    }
    if (*count >= maxCount || slabLen - off < kMaxPlain) {
      pending_.assign(d + pos, d + n);
      return F_MORE;
    }
    size_t plain = 0;
    uint8_t type = 0;
    const RecordLayer::Opened r = rl_->open(d + pos, len, slab + off, &plain, &type);
    pos += len;
    if (r != RecordLayer::Opened::Ok) {
      if (r == RecordLayer::Opened::Replayed)
        discardedReplayed_ += 1;
      else if (r == RecordLayer::Opened::Forged)
        discardedForged_ += 1;
      else
        discardedOther_ += 1;
      continue;
    }
    if (type == kApplicationData) {
      dropFlight();  // the client has our Finished
      if (plain == 0) continue;
      // A forwarded packet's slab space is reused for the next record: nothing went to JS.
      if (forward_.offer(slab + off, plain)) continue;
      lens[(*count)++] = static_cast<uint32_t>(plain);
      off += plain;
      continue;
    }
    const uint32_t end = onControlRecord(type, slab + off, plain);
    if (end != 0) return end;
  }
  return 0;
}

void Conn::fail(const char *what) {
  std::string detail = drainErrors();
  if (error_.empty()) error_ = detail.empty() ? std::string(what) : std::string(what) + ": " + detail;
  // Output OpenSSL produced for the failure (an alert) must reach the peer.
  if (pipe_) flushHeld(pipe_.get());
  rl_.reset();
  state_ = State::Closed;
}

// Reads the records OpenSSL can give into slab[off..] (lens[i] = length of record i), or to the
// TUN forwarder. Returns flags; *count = records put into the slab.
uint32_t Conn::readRecords(uint8_t *slab, size_t slabLen, size_t off, uint32_t *lens, size_t maxCount,
                           uint32_t *count) {
  for (;;) {
    if (*count >= maxCount || slabLen - off < kMaxPlain) return F_MORE;
    size_t room = slabLen - off;
    int n = SSL_read(ssl_, slab + off, room > INT_MAX ? INT_MAX : static_cast<int>(room));
    if (n > 0) {
      // A forwarded packet's slab space is reused for the next record: nothing went to JS.
      if (forward_.offer(slab + off, static_cast<size_t>(n))) continue;
      lens[(*count)++] = static_cast<uint32_t>(n);
      off += static_cast<size_t>(n);
      continue;
    }
    int e = SSL_get_error(ssl_, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
    if (e == SSL_ERROR_ZERO_RETURN) {
      SSL_shutdown(ssl_);  // our close_notify in reply
      state_ = State::Closed;
      return F_PEER_CLOSED;
    }
    fail("read failed");
    return F_FATAL;
  }
}

// input(datagram: Buffer | null, slab: Buffer, slabOffset: number, lens: Uint32Array,
//       datagramOffset?, datagramLength?): number
//   = flags | (records << 8); record i is lens[i] bytes, consecutive in slab from slabOffset.
Napi::Value Conn::Input(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[1].IsBuffer() || !info[2].IsNumber() || !info[3].IsTypedArray())
    throwCode(env, "EDTLS_USAGE", "input(datagram, slab, offset, lens)");
  if (!live() || state_ == State::Closed) return Napi::Number::New(env, F_CLOSED);
  auto slab = info[1].As<Napi::Buffer<uint8_t>>();
  double offD = info[2].As<Napi::Number>().DoubleValue();
  auto lensTa = info[3].As<Napi::TypedArray>();
  if (lensTa.TypedArrayType() != napi_uint32_array) throwCode(env, "EDTLS_USAGE", "lens must be a Uint32Array");
  auto lens = lensTa.As<Napi::Uint32Array>();
  if (!(offD >= 0) || offD > static_cast<double>(slab.Length())) throwCode(env, "EDTLS_USAGE", "slab offset out of range");

  if (state_ == State::Held) return Napi::Number::New(env, 0);  // verdict pending: drop

  const uint8_t *in = nullptr;
  size_t inLen = 0;
  if (info[0].IsBuffer()) {
    auto dg = info[0].As<Napi::Buffer<uint8_t>>();
    size_t dgOff = 0;
    size_t dgLen = dg.Length();
    datagramRange(env, info, 4, dg.Length(), &dgOff, &dgLen);
    if (dgLen == 0) return Napi::Number::New(env, 0);
    in = dg.Data() + dgOff;
    inLen = dgLen;
  }
  if (rl_) {
    // After the handoff: the native record layer. A datagram's rest that did not fit the last
    // slab comes first (a new datagram while one is pending cannot happen: JS loops on F_MORE).
    std::vector<uint8_t> rest;
    if (in == nullptr) {
      rest.swap(pending_);
      in = rest.data();
      inLen = rest.size();
    } else {
      pending_.clear();
    }
    uint32_t count = 0;
    const uint32_t flags = openRecords(in, inLen, slab.Data(), slab.Length(), static_cast<size_t>(offD), lens.Data(),
                                       lens.ElementLength(), &count);
    ERR_clear_error();  // a failed tag check must not leave errors for node's own crypto
    if (state_ == State::Closed) rl_.reset();  // TunDispatch routes to it expire now
    return Napi::Number::New(env, static_cast<double>(flags) + static_cast<double>(count) * 256.0);
  }
  pipe_->in = in;
  pipe_->inLen = inLen;
  uint32_t flags = 0;
  uint32_t count = 0;
  ERR_clear_error();
  if (state_ == State::Handshaking) {
    int r = SSL_do_handshake(ssl_);
    if (r == 1) {
      flags |= F_HANDSHAKE_DONE;
      size_t mtu = DTLS_get_data_mtu(ssl_);
      maxRecord_ = mtu > kMaxPlain ? kMaxPlain : mtu;
      // Both point into OpenSSL's static tables (its cipher list, version names).
      const char *c = SSL_get_cipher_name(ssl_);
      cipher_ = c != nullptr ? c : "";
      const char *v = SSL_get_version(ssl_);
      version_ = v != nullptr ? v : "";
      if (server_) {
        state_ = State::Held;
        pipe_->hold = true;
      } else {
        state_ = State::Open;
      }
    } else {
      int e = SSL_get_error(ssl_, r);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        fail("handshake failed");
        flags |= F_FATAL;
      }
    }
  }
  if (state_ == State::Open) {
    flags |= readRecords(slab.Data(), slab.Length(), static_cast<size_t>(offD), lens.Data(), lens.ElementLength(),
                         &count);
  }
  if (pipe_) {
    pipe_->in = nullptr;
    pipe_->inLen = 0;
  }
  ERR_clear_error();
  return Napi::Number::New(env, static_cast<double>(flags) + static_cast<double>(count) * 256.0);
}

// setForward(fd, sourceIpv4HostOrder, mtu, dropInvalid = false, vnetHdr = false,
//            checkDestination = false): fd < 0 turns forwarding off; vnetHdr: the fd carries a
// virtio_net_hdr (a TUN device opened with offload); checkDestination: the client role, the
// address is the packets' destination (the enclave IP) instead of their source.
Napi::Value Conn::SetForward(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber())
    throwCode(env, "EDTLS_USAGE", "setForward(fd, ip, mtu, dropInvalid?, vnetHdr?, checkDestination?)");
  int fd = info[0].As<Napi::Number>().Int32Value();
  double ip = info[1].As<Napi::Number>().DoubleValue();
  double mtu = info[2].As<Napi::Number>().DoubleValue();
  if (!(ip >= 0 && ip <= 4294967295.0) || !(mtu >= 20 && mtu <= 65535))
    throwCode(env, "EDTLS_USAGE", "sourceIp must be a uint32 and mtu 20..65535");
  const bool dropInvalid = info.Length() >= 4 && info[3].ToBoolean().Value();
  const bool vnetHdr = info.Length() >= 5 && info[4].ToBoolean().Value();
  forward_.configure(fd, static_cast<uint32_t>(ip), static_cast<size_t>(mtu), dropInvalid, vnetHdr);
  forward_.checkDestination(info.Length() >= 6 && info[5].ToBoolean().Value());
  return env.Undefined();
}

// forwardStats(): [packets, bytes, dropped, oversize, malformed, spoofed, lastSpoofedSource].
Napi::Value Conn::ForwardStats(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const double values[] = {forward_.packets,  forward_.bytes,   forward_.dropped,
                           forward_.oversize, forward_.malformed, forward_.spoofed,
                           static_cast<double>(forward_.lastSpoofedSource)};
  Napi::Array a = Napi::Array::New(env, sizeof values / sizeof values[0]);
  for (uint32_t i = 0; i < sizeof values / sizeof values[0]; i++) a.Set(i, Napi::Number::New(env, values[i]));
  return a;
}

// timeout(): the retransmission timer fired; returns flags.
Napi::Value Conn::Timeout(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (ssl_ == nullptr || state_ != State::Handshaking || pipe_->hold) return Napi::Number::New(env, 0);
  ERR_clear_error();
  int r = DTLSv1_handle_timeout(ssl_);
  uint32_t flags = 0;
  if (r < 0) {
    fail("retransmission limit reached");
    flags |= F_FATAL;
  }
  ERR_clear_error();
  return Napi::Number::New(env, flags);
}

// nextTimeout(): milliseconds until the DTLS retransmission timer fires, or -1 when it is not running.
Napi::Value Conn::NextTimeout(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (ssl_ == nullptr || state_ != State::Handshaking) return Napi::Number::New(env, -1);
  timeval tv{};
  if (DTLSv1_get_timeout(ssl_, &tv) != 1) return Napi::Number::New(env, -1);
  double ms = static_cast<double>(tv.tv_sec) * 1000.0 + static_cast<double>(tv.tv_usec + 999) / 1000.0;
  return Napi::Number::New(env, ms);
}

// release(): server, the verdict accepted the peer: sends the held final flight (and keeps a copy
// for the client's retransmissions) and hands the association off to the native record layer.
// Returns 0, or F_FATAL when the handoff failed (the connection is closed then).
Napi::Value Conn::Release(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (ssl_ == nullptr || state_ != State::Held) return Napi::Number::New(env, F_CLOSED);
  pipe_->hold = false;
  flight_.swap(pipe_->held);
  flightEnds_.swap(pipe_->heldEnds);
  flight_.shrink_to_fit();
  flightEnds_.shrink_to_fit();
  resendFlight();
  // The cookie identity of the peer served the listener only.
  std::vector<uint8_t>().swap(pipe_->cookieKey);
  state_ = State::Open;
  if (!handOff()) {
    state_ = State::Closed;
    return Napi::Number::New(env, F_FATAL);
  }
  return Napi::Number::New(env, 0);
}

// handOff(): client, established: carry on with the native record layer (as the server does after
// release()), so that TunDispatch can seal for this session and records open without OpenSSL.
// Only when OpenSSL holds no unread record (JS reads them first): those would be lost. Returns
// true when handed off; false leaves the connection on OpenSSL, unchanged.
Napi::Value Conn::HandOff(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (server_ || ssl_ == nullptr || rl_ || state_ != State::Open || SSL_has_pending(ssl_) == 1)
    return Napi::Boolean::New(env, false);
  const std::string before = error_;
  const bool ok = handOff();
  if (!ok) error_ = before;  // still open on OpenSSL: not an error of the association
  ERR_clear_error();
  return Napi::Boolean::New(env, ok);
}

// reject(alertDescription): server, the verdict rejected the peer (or the deadline passed). Drops
// the held final flight and sends a fatal alert in epoch 0, which the client still reads (it has
// not seen our ChangeCipherSpec), so the peer learns why.
Napi::Value Conn::Reject(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throwCode(env, "EDTLS_USAGE", "reject(alertDescription)");
  int desc = info[0].As<Napi::Number>().Int32Value();
  if (desc < 0 || desc > 255) throwCode(env, "EDTLS_USAGE", "alert description out of range");
  if (ssl_ == nullptr || state_ == State::Closed) return Napi::Number::New(env, F_CLOSED);
  pipe_->held.clear();
  pipe_->heldEnds.clear();
  pipe_->hold = false;
  // A fresh epoch-0 sequence number, or the peer's replay window drops the alert.
  uint64_t seq = pipe_->nextSeq(0);
  uint8_t rec[kRecordHeader + 2] = {21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, static_cast<uint8_t>(desc)};
  for (int i = 0; i < 6; i++) rec[10 - i] = static_cast<uint8_t>(seq >> (8 * i));
  emitDatagram(pipe_.get(), rec, sizeof rec);
  pipe_->alertSent = (2 << 8) | desc;
  state_ = State::Closed;
  return Napi::Number::New(env, 0);
}

// send(data: Uint8Array): 1 sent, 0 closed, -1 too large / empty, -2 failed.
Napi::Value Conn::Send(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  // One napi_get_typedarray_info call (the data pointer already includes the view's offset);
  // this is the per-record hot path.
  napi_typedarray_type type;
  size_t elements = 0;
  void *data = nullptr;
  if (info.Length() < 1 || !info[0].IsTypedArray() ||
      napi_get_typedarray_info(env, info[0], &type, &elements, &data, nullptr, nullptr) != napi_ok ||
      (type != napi_uint8_array && type != napi_uint8_clamped_array && type != napi_int8_array))
    throwCode(env, "EDTLS_USAGE", "send(Uint8Array)");
  if (!live() || state_ != State::Open) return Napi::Number::New(env, 0);
  const size_t len = elements;
  if (len == 0 || len > maxRecord_ || data == nullptr) return Napi::Number::New(env, -1);
  if (rl_) {
    const bool sent = sealAndSend(kApplicationData, static_cast<const uint8_t *>(data), len);
    if (!sent) fail("record sealing failed");
    ERR_clear_error();
    return Napi::Number::New(env, sent ? 1 : -2);
  }
  ERR_clear_error();
  int r = SSL_write(ssl_, data, static_cast<int>(len));
  if (r != static_cast<int>(len)) {
    fail("write failed");
    return Napi::Number::New(env, -2);
  }
  return Napi::Number::New(env, 1);
}

// shutdown(): sends close_notify (when established) and closes. Returns flags.
Napi::Value Conn::Shutdown(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!live() || state_ == State::Closed) return Napi::Number::New(env, F_CLOSED);
  ERR_clear_error();
  if (state_ == State::Open && rl_)
    sendAlert(1, 0);  // close_notify
  else if (state_ == State::Open)
    SSL_shutdown(ssl_);
  rl_.reset();
  pipe_->held.clear();
  pipe_->heldEnds.clear();
  pipe_->hold = false;
  state_ = State::Closed;
  ERR_clear_error();
  return Napi::Number::New(env, 0);
}

// peerChain(): DER of the peer's certificate chain, leaf first.
Napi::Value Conn::PeerChain(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Array arr = Napi::Array::New(env);
  if (ssl_ == nullptr) return arr;
  uint32_t n = 0;
  X509 *leaf = SSL_get0_peer_certificate(ssl_);
  auto push = [&](X509 *x) {
    int len = i2d_X509(x, nullptr);
    if (len <= 0) return;
    auto buf = Napi::Buffer<uint8_t>::New(env, static_cast<size_t>(len));
    unsigned char *p = buf.Data();
    if (i2d_X509(x, &p) == len) arr.Set(n++, buf);
  };
  if (leaf != nullptr) push(leaf);
  STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl_);
  if (chain != nullptr) {
    for (int i = 0; i < sk_X509_num(chain); i++) {
      X509 *x = sk_X509_value(chain, i);
      if (x == nullptr || (i == 0 && leaf != nullptr && X509_cmp(x, leaf) == 0)) continue;
      push(x);
    }
  }
  ERR_clear_error();
  return arr;
}

Napi::Value Conn::Info(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  const char *st = state_ == State::Handshaking ? "handshaking"
                   : state_ == State::Held      ? "held"
                   : state_ == State::Open      ? "open"
                                                : "closed";
  o.Set("state", st);
  o.Set("error", error_);
  o.Set("maxRecord", Napi::Number::New(env, static_cast<double>(maxRecord_)));
  if (cipher_[0] != '\0') {
    o.Set("cipher", cipher_);
    o.Set("version", version_);
  }
  o.Set("recordLayer", rl_ ? "native" : ssl_ != nullptr ? "openssl" : "none");
  if (rl_) {
    // Which directions hold a persistent cipher context (created lazily, record_layer.h), and
    // the bytes of our final flight still kept for a retransmitted client Finished.
    Napi::Object contexts = Napi::Object::New(env);
    contexts.Set("seal", rl_->hasSealContext());
    contexts.Set("open", rl_->hasOpenContext());
    o.Set("cipherContexts", contexts);
    o.Set("finalFlightBytes", Napi::Number::New(env, static_cast<double>(flight_.size())));
  }
  Napi::Object discarded = Napi::Object::New(env);
  discarded.Set("replayed", discardedReplayed_);
  discarded.Set("forged", discardedForged_);
  discarded.Set("other", discardedOther_);
  o.Set("discarded", discarded);
  if (pipe_) {
    auto alert = [&](int v) -> Napi::Value {
      if (v < 0) return env.Null();
      Napi::Object a = Napi::Object::New(env);
      a.Set("level", (v >> 8) == 2 ? "fatal" : "warning");
      a.Set("code", v & 0xff);
      a.Set("name", SSL_alert_desc_string_long(v));
      return a;
    };
    o.Set("alertReceived", alert(pipe_->alertRecv));
    o.Set("alertSent", alert(pipe_->alertSent));
    if (pipe_->lastSendErrno != 0) o.Set("sendError", std::strerror(pipe_->lastSendErrno));
  }
  return o;
}

Napi::Value Conn::Free(const Napi::CallbackInfo &info) {
  release();
  return info.Env().Undefined();
}

}  // namespace seng_dtls
