// seng DTLS 1.2 addon.
//
// Drives the OpenSSL 3 that is linked into the node binary (no library of our own is linked)
// through a custom datagram BIO:
//   - reads come from the one datagram handed to Conn.input() (borrowed, never copied into a BIO),
//   - writes go straight to the UDP socket with sendto(2), or are queued when there is no socket
//     (in-memory use) or while the server holds its final handshake flight back until the
//     asynchronous certificate verdict is in.
// The UDP socket is ours too (Endpoint): libuv polls it, recvmmsg(2) reads up to 32 datagrams at
// a time into one arena, and JavaScript gets one callback per batch.
// One BIO_write is one datagram (one DTLS record), like OpenSSL's own dgram BIO.
//
// Everything runs on the JavaScript thread; nothing here blocks.

#include <napi.h>
#include <uv.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------
// Counters of live native objects (leak tests) and of datagram paths.

std::atomic<int64_t> gLiveSsl{0};
std::atomic<int64_t> gLiveCtx{0};
std::atomic<int64_t> gLiveConn{0};
std::atomic<int64_t> gLivePipe{0};
std::atomic<int64_t> gLiveEndpoint{0};
std::atomic<uint64_t> gDirectSends{0};
std::atomic<uint64_t> gQueuedSends{0};
std::atomic<uint64_t> gDroppedSends{0};

constexpr size_t kRecordHeader = 13;           // DTLS record header
constexpr size_t kMaxQueuedBytes = 1u << 20;   // per connection; beyond this output is dropped like loss
constexpr size_t kCookieLen = 32;              // HMAC-SHA256
constexpr size_t kMaxPlain = 16384;            // SSL3_RT_MAX_PLAIN_LENGTH

// Flags returned to JavaScript (keep in sync with src/dtls/native.ts).
enum : uint32_t {
  F_OUTPUT = 1,          // datagrams are queued: call takeOutput() and send them
  F_HANDSHAKE_DONE = 2,  // handshake finished during this call
  F_PEER_CLOSED = 4,     // close_notify received (ours was sent in reply)
  F_FATAL = 8,           // fatal error or fatal alert: connection is dead
  F_MORE = 16,           // slab or lens full: call input(null, ...) again with fresh space
  F_CLOSED = 32,         // connection was already closed / freed
};

enum class State { Handshaking, Held, Open, Closed };

// ---------------------------------------------------------------------------------------------
// Per-SSL I/O state, the data of our BIO and the SSL's app data.

struct Pipe {
  Pipe() { ++gLivePipe; }
  ~Pipe() { --gLivePipe; }
  Pipe(const Pipe &) = delete;
  Pipe &operator=(const Pipe &) = delete;

  // Read side: the datagram of the current input() call.
  const uint8_t *in = nullptr;
  size_t inLen = 0;

  // Write side.
  int fd = -1;
  sockaddr_storage peer{};
  socklen_t peerLen = 0;
  long mtuOverhead = 28;  // IPv4 + UDP headers
  bool hold = false;      // collect output in `held` instead of sending
  std::vector<uint8_t> out;
  std::vector<size_t> outEnds;
  std::vector<uint8_t> held;
  std::vector<size_t> heldEnds;
  bool sawEpoch0 = false;
  uint64_t maxEpoch0Seq = 0;
  int lastSendErrno = 0;

  // Identity of the peer for the cookie HMAC: family, address bytes, port.
  std::vector<uint8_t> cookieKey;

  // Alerts seen by the info callback: (level << 8) | description, -1 if none.
  int alertRecv = -1;
  int alertSent = -1;
};

void appendDatagram(std::vector<uint8_t> &buf, std::vector<size_t> &ends, const uint8_t *d, size_t n) {
  buf.insert(buf.end(), d, d + n);
  ends.push_back(buf.size());
}

// Sends one datagram on the socket, or, without a socket (fd -1: in-memory use, tests), queues it
// for takeOutput(). Never fails: a datagram that can be neither sent nor queued is dropped, which
// DTLS treats like loss.
void emitDatagram(Pipe *p, const uint8_t *d, size_t n) {
  if (p->fd >= 0) {
    // A full socket buffer (EAGAIN / ENOBUFS) is congestion: the datagram is lost, as it would be
    // a hop later; DTLS retransmits handshake flights and the tunnelled protocols recover.
    ssize_t r;
    do {
      r = sendto(p->fd, d, n, MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<const sockaddr *>(&p->peer), p->peerLen);
    } while (r < 0 && errno == EINTR);
    if (r == static_cast<ssize_t>(n)) {
      ++gDirectSends;
      return;
    }
    p->lastSendErrno = r < 0 ? errno : EMSGSIZE;
    ++gDroppedSends;
    return;
  }
  if (p->out.size() + n > kMaxQueuedBytes) {
    ++gDroppedSends;
    return;
  }
  appendDatagram(p->out, p->outEnds, d, n);
  ++gQueuedSends;
}

// ---------------------------------------------------------------------------------------------
// The BIO method.

BIO_METHOD *gMethod = nullptr;
std::once_flag gMethodOnce;

int pipeWrite(BIO *b, const char *data, int len) {
  BIO_clear_retry_flags(b);
  auto *p = static_cast<Pipe *>(BIO_get_data(b));
  if (p == nullptr || data == nullptr || len < 0) return -1;
  const auto *d = reinterpret_cast<const uint8_t *>(data);
  const auto n = static_cast<size_t>(len);
  // Remember the highest epoch-0 record sequence number we produced: a hand-made plaintext
  // alert (reject()) must use a fresh one or the peer's replay window drops it.
  if (n >= kRecordHeader && d[3] == 0 && d[4] == 0) {
    uint64_t seq = 0;
    for (size_t i = 5; i < 11; i++) seq = (seq << 8) | d[i];
    if (!p->sawEpoch0 || seq > p->maxEpoch0Seq) p->maxEpoch0Seq = seq;
    p->sawEpoch0 = true;
  }
  if (p->hold) {
    if (p->held.size() + n <= kMaxQueuedBytes) appendDatagram(p->held, p->heldEnds, d, n);
    return len;
  }
  emitDatagram(p, d, n);
  return len;
}

int pipeRead(BIO *b, char *buf, int len) {
  BIO_clear_retry_flags(b);
  auto *p = static_cast<Pipe *>(BIO_get_data(b));
  if (p == nullptr || p->in == nullptr || buf == nullptr || len <= 0) {
    BIO_set_retry_read(b);
    return -1;
  }
  size_t n = p->inLen < static_cast<size_t>(len) ? p->inLen : static_cast<size_t>(len);
  std::memcpy(buf, p->in, n);
  // A datagram is read once, whole (a truncated one is garbage to DTLS and gets dropped there).
  p->in = nullptr;
  p->inLen = 0;
  return static_cast<int>(n);
}

long pipeCtrl(BIO *b, int cmd, long /*num*/, void * /*ptr*/) {
  auto *p = static_cast<Pipe *>(BIO_get_data(b));
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_DGRAM_GET_MTU_OVERHEAD:
      return p != nullptr ? p->mtuOverhead : 28;
    case BIO_CTRL_DGRAM_SET_NEXT_TIMEOUT:
    case BIO_CTRL_DGRAM_SET_PEER:
    case BIO_CTRL_DGRAM_SET_CONNECTED:
      return 1;
    case BIO_CTRL_DGRAM_GET_FALLBACK_MTU:
      return 1500 - (p != nullptr ? p->mtuOverhead : 28);
    default:
      // QUERY_MTU, MTU_EXCEEDED, GET_PEER, PENDING, WPENDING, ...: not supported / nothing pending.
      return 0;
  }
}

int pipeCreate(BIO *b) {
  BIO_set_init(b, 1);
  BIO_set_data(b, nullptr);
  return 1;
}

int pipeDestroy(BIO *b) {
  if (b == nullptr) return 0;
  BIO_set_data(b, nullptr);
  BIO_set_init(b, 0);
  return 1;
}

BIO_METHOD *pipeMethod() {
  std::call_once(gMethodOnce, [] {
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "seng-dtls-datagram");
    if (m == nullptr) return;
    BIO_meth_set_write(m, pipeWrite);
    BIO_meth_set_read(m, pipeRead);
    BIO_meth_set_ctrl(m, pipeCtrl);
    BIO_meth_set_create(m, pipeCreate);
    BIO_meth_set_destroy(m, pipeDestroy);
    gMethod = m;
  });
  return gMethod;
}

// ---------------------------------------------------------------------------------------------
// Errors.

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

[[noreturn]] void throwCode(Napi::Env env, const char *code, const std::string &message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  throw err;
}

[[noreturn]] void throwSsl(Napi::Env env, const char *code, const std::string &what) {
  std::string detail = drainErrors();
  throwCode(env, code, detail.empty() ? what : what + ": " + detail);
}

// ---------------------------------------------------------------------------------------------
// Shared context: the SSL_CTX and the cookie secrets. Owned by Context and by every Conn made
// from it (shared_ptr), so a Conn keeps working after its Context is freed.

struct CtxShared {
  SSL_CTX *ctx = nullptr;
  bool server = false;
  long linkMtu = 1500;
  uint8_t secret[2][32]{};  // current, previous
  bool havePrevious = false;

  CtxShared() { ++gLiveCtx; }
  ~CtxShared() {
    if (ctx != nullptr) SSL_CTX_free(ctx);
    OPENSSL_cleanse(secret, sizeof secret);
    --gLiveCtx;
  }
  CtxShared(const CtxShared &) = delete;
  CtxShared &operator=(const CtxShared &) = delete;
};

bool cookieFor(const CtxShared *cs, int which, const Pipe *p, uint8_t out[kCookieLen]) {
  unsigned int mdLen = 0;
  if (p->cookieKey.empty()) return false;
  if (HMAC(EVP_sha256(), cs->secret[which], sizeof cs->secret[which], p->cookieKey.data(), p->cookieKey.size(), out,
           &mdLen) == nullptr)
    return false;
  return mdLen == kCookieLen;
}

int generateCookie(SSL *ssl, unsigned char *cookie, unsigned int *cookieLen) {
  auto *p = static_cast<Pipe *>(SSL_get_app_data(ssl));
  auto *cs = static_cast<CtxShared *>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (p == nullptr || cs == nullptr || cookie == nullptr || cookieLen == nullptr) return 0;
  // OpenSSL's buffer is DTLS1_COOKIE_LENGTH (255) bytes.
  static_assert(kCookieLen <= DTLS1_COOKIE_LENGTH, "cookie too long");
  if (!cookieFor(cs, 0, p, cookie)) return 0;
  *cookieLen = kCookieLen;
  return 1;
}

int verifyCookie(SSL *ssl, const unsigned char *cookie, unsigned int cookieLen) {
  auto *p = static_cast<Pipe *>(SSL_get_app_data(ssl));
  auto *cs = static_cast<CtxShared *>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (p == nullptr || cs == nullptr || cookie == nullptr || cookieLen != kCookieLen) return 0;
  uint8_t expect[kCookieLen];
  for (int which = 0; which < (cs->havePrevious ? 2 : 1); which++) {
    if (cookieFor(cs, which, p, expect) && CRYPTO_memcmp(expect, cookie, kCookieLen) == 0) return 1;
  }
  return 0;
}

// Server: accept any client chain at the OpenSSL level (RA-TLS certificates are self-signed and
// verified by attestation in the asynchronous JavaScript hook). The CertificateVerify signature is
// still checked by the handshake. From here on the server's output is held back until the verdict.
int acceptChainAndHold(X509_STORE_CTX *x, void * /*arg*/) {
  auto *ssl = static_cast<SSL *>(X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx()));
  if (ssl == nullptr || X509_STORE_CTX_get0_cert(x) == nullptr) return 0;
  auto *p = static_cast<Pipe *>(SSL_get_app_data(ssl));
  if (p != nullptr) p->hold = true;
  X509_STORE_CTX_set_error(x, X509_V_OK);
  return 1;
}

void infoCallback(const SSL *ssl, int where, int ret) {
  if ((where & SSL_CB_ALERT) == 0) return;
  auto *p = static_cast<Pipe *>(SSL_get_app_data(ssl));
  if (p == nullptr) return;
  if ((where & SSL_CB_READ) != 0)
    p->alertRecv = ret & 0xffff;
  else
    p->alertSent = ret & 0xffff;
}

int noPassword(char * /*buf*/, int /*size*/, int /*rwflag*/, void * /*u*/) { return 0; }

void loadIdentity(Napi::Env env, SSL_CTX *ctx, const std::string &certPem, const std::string &keyPem) {
  if (certPem.size() > INT_MAX || keyPem.size() > INT_MAX) throwCode(env, "EDTLS_IDENTITY", "PEM too large");
  BIO *cb = BIO_new_mem_buf(certPem.data(), static_cast<int>(certPem.size()));
  if (cb == nullptr) throwSsl(env, "EDTLS_INTERNAL", "BIO_new_mem_buf");
  X509 *leaf = PEM_read_bio_X509(cb, nullptr, noPassword, nullptr);
  if (leaf == nullptr) {
    BIO_free(cb);
    throwSsl(env, "EDTLS_IDENTITY", "certificate PEM does not contain a certificate");
  }
  int ok = SSL_CTX_use_certificate(ctx, leaf);
  X509_free(leaf);
  if (ok != 1) {
    BIO_free(cb);
    throwSsl(env, "EDTLS_IDENTITY", "certificate not usable");
  }
  // Further certificates in the PEM are the chain of this identity.
  X509 *extra;
  while ((extra = PEM_read_bio_X509(cb, nullptr, noPassword, nullptr)) != nullptr) {
    if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
      X509_free(extra);
      BIO_free(cb);
      throwSsl(env, "EDTLS_IDENTITY", "chain certificate not usable");
    }
  }
  ERR_clear_error();  // the end-of-PEM "no start line"
  BIO_free(cb);

  BIO *kb = BIO_new_mem_buf(keyPem.data(), static_cast<int>(keyPem.size()));
  if (kb == nullptr) throwSsl(env, "EDTLS_INTERNAL", "BIO_new_mem_buf");
  EVP_PKEY *key = PEM_read_bio_PrivateKey(kb, nullptr, noPassword, nullptr);
  BIO_free(kb);
  if (key == nullptr) throwSsl(env, "EDTLS_IDENTITY", "key PEM does not contain an unencrypted private key");
  ok = SSL_CTX_use_PrivateKey(ctx, key);
  EVP_PKEY_free(key);
  if (ok != 1) throwSsl(env, "EDTLS_IDENTITY", "private key does not match its certificate or is not usable");
  if (SSL_CTX_check_private_key(ctx) != 1) throwSsl(env, "EDTLS_IDENTITY", "private key does not match its certificate");
}

bool parseAddress(const std::string &host, int port, sockaddr_storage *ss, socklen_t *len, std::vector<uint8_t> *key) {
  if (port < 0 || port > 65535) return false;
  std::memset(ss, 0, sizeof *ss);
  auto *v4 = reinterpret_cast<sockaddr_in *>(ss);
  auto *v6 = reinterpret_cast<sockaddr_in6 *>(ss);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(sockaddr_in);
    if (key != nullptr) {
      const auto *a = reinterpret_cast<const uint8_t *>(&v4->sin_addr);
      key->assign({4, a[0], a[1], a[2], a[3], static_cast<uint8_t>(port >> 8), static_cast<uint8_t>(port)});
    }
    return true;
  }
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(sockaddr_in6);
    if (key != nullptr) {
      const auto *a = reinterpret_cast<const uint8_t *>(&v6->sin6_addr);
      key->assign({6});
      key->insert(key->end(), a, a + 16);
      key->push_back(static_cast<uint8_t>(port >> 8));
      key->push_back(static_cast<uint8_t>(port));
    }
    return true;
  }
  return false;
}

// Creates an SSL bound to a fresh Pipe through our BIO.
SSL *newSsl(Napi::Env env, CtxShared *cs, Pipe *pipe) {
  BIO_METHOD *m = pipeMethod();
  if (m == nullptr) throwSsl(env, "EDTLS_INTERNAL", "BIO_meth_new");
  SSL *ssl = SSL_new(cs->ctx);
  if (ssl == nullptr) throwSsl(env, "EDTLS_INTERNAL", "SSL_new");
  ++gLiveSsl;
  BIO *bio = BIO_new(m);
  if (bio == nullptr) {
    SSL_free(ssl);
    --gLiveSsl;
    throwSsl(env, "EDTLS_INTERNAL", "BIO_new");
  }
  BIO_set_data(bio, pipe);
  SSL_set_bio(ssl, bio, bio);  // one reference, owned by the SSL
  SSL_set_app_data(ssl, pipe);
  SSL_set_options(ssl, SSL_OP_NO_QUERY_MTU);
  DTLS_set_link_mtu(ssl, cs->linkMtu);
  if (cs->server)
    SSL_set_accept_state(ssl);
  else
    SSL_set_connect_state(ssl);
  return ssl;
}

struct AddonData {
  Napi::FunctionReference connCtor;
};

struct ConnInit {
  SSL *ssl;
  std::unique_ptr<Pipe> pipe;
  std::shared_ptr<CtxShared> shared;
};

// ---------------------------------------------------------------------------------------------
// Conn: one DTLS association.

class Conn : public Napi::ObjectWrap<Conn> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Conn",
                       {
                           InstanceMethod<&Conn::Input>("input"),
                           InstanceMethod<&Conn::Timeout>("timeout"),
                           InstanceMethod<&Conn::NextTimeout>("nextTimeout"),
                           InstanceMethod<&Conn::Release>("release"),
                           InstanceMethod<&Conn::Reject>("reject"),
                           InstanceMethod<&Conn::Send>("send"),
                           InstanceMethod<&Conn::Shutdown>("shutdown"),
                           InstanceMethod<&Conn::TakeOutput>("takeOutput"),
                           InstanceMethod<&Conn::PeerChain>("peerChain"),
                           InstanceMethod<&Conn::Info>("info"),
                           InstanceMethod<&Conn::SetFd>("setFd"),
                           InstanceMethod<&Conn::SetForward>("setForward"),
                           InstanceMethod<&Conn::ForwardStats>("forwardStats"),
                           InstanceMethod<&Conn::Free>("free"),
                       });
  }

  explicit Conn(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Conn>(info) {
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

  ~Conn() override {
    release();
    --gLiveConn;
  }

 private:
  SSL *ssl_ = nullptr;
  std::unique_ptr<Pipe> pipe_;
  std::shared_ptr<CtxShared> shared_;
  bool server_ = false;
  State state_ = State::Handshaking;
  std::string error_;
  size_t maxRecord_ = 0;
  // Native forwarding (gateway receive tunnel): decrypted records that are well-formed IPv4
  // packets from `fwdSrc_` (network order) of at most `fwdMtu_` bytes are written to `fwdFd_`
  // here, without a trip through JS; anything else is handed to JS as usual.
  int fwdFd_ = -1;
  uint32_t fwdSrc_ = 0;
  size_t fwdMtu_ = 0;
  double fwdPackets_ = 0, fwdBytes_ = 0, fwdDropped_ = 0;

  bool forwardable(const uint8_t *p, size_t n) const {
    if (n < 20 || n > fwdMtu_ || (p[0] >> 4) != 4 || (p[0] & 0x0f) < 5) return false;
    if ((static_cast<size_t>(p[2]) << 8 | p[3]) != n) return false;
    uint32_t src;
    std::memcpy(&src, p + 12, 4);
    return src == fwdSrc_;
  }

  void release() {
    if (ssl_ != nullptr) {
      SSL_free(ssl_);
      ssl_ = nullptr;
      --gLiveSsl;
    }
    pipe_.reset();
    shared_.reset();
    state_ = State::Closed;
  }

  uint32_t outputFlag() const { return pipe_ && !pipe_->outEnds.empty() ? static_cast<uint32_t>(F_OUTPUT) : 0u; }

  void fail(const char *what) {
    std::string detail = drainErrors();
    if (error_.empty()) error_ = detail.empty() ? std::string(what) : std::string(what) + ": " + detail;
    // Output OpenSSL produced for the failure (an alert) must reach the peer.
    flushHeld();
    state_ = State::Closed;
  }

  void flushHeld() {
    if (!pipe_) return;
    pipe_->hold = false;
    size_t start = 0;
    for (size_t end : pipe_->heldEnds) {
      emitDatagram(pipe_.get(), pipe_->held.data() + start, end - start);
      start = end;
    }
    pipe_->held.clear();
    pipe_->heldEnds.clear();
  }

  // input(datagram: Buffer | null, slab: Buffer, slabOffset: number, lens: Uint32Array): number
  //   = flags | (records << 8); record i is lens[i] bytes, consecutive in slab from slabOffset.
  Napi::Value Input(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (info.Length() < 4 || !info[1].IsBuffer() || !info[2].IsNumber() || !info[3].IsTypedArray())
      throwCode(env, "EDTLS_USAGE", "input(datagram, slab, offset, lens)");
    if (ssl_ == nullptr || state_ == State::Closed) return Napi::Number::New(env, F_CLOSED);
    auto slab = info[1].As<Napi::Buffer<uint8_t>>();
    double offD = info[2].As<Napi::Number>().DoubleValue();
    auto lensTa = info[3].As<Napi::TypedArray>();
    if (lensTa.TypedArrayType() != napi_uint32_array) throwCode(env, "EDTLS_USAGE", "lens must be a Uint32Array");
    auto lens = lensTa.As<Napi::Uint32Array>();
    if (!(offD >= 0) || offD > static_cast<double>(slab.Length())) throwCode(env, "EDTLS_USAGE", "slab offset out of range");
    size_t off = static_cast<size_t>(offD);
    const size_t slabLen = slab.Length();
    const size_t maxCount = lens.ElementLength();

    if (state_ == State::Held) return Napi::Number::New(env, outputFlag());  // verdict pending: drop

    if (info[0].IsBuffer()) {
      auto dg = info[0].As<Napi::Buffer<uint8_t>>();
      size_t dgOff = 0;
      size_t dgLen = dg.Length();
      if (info.Length() >= 6 && info[4].IsNumber() && info[5].IsNumber()) {
        // input(arena, slab, slabOffset, lens, datagramOffset, datagramLength)
        double o = info[4].As<Napi::Number>().DoubleValue();
        double l = info[5].As<Napi::Number>().DoubleValue();
        if (!(o >= 0) || !(l >= 0) || o + l > static_cast<double>(dg.Length()))
          throwCode(env, "EDTLS_USAGE", "datagram range out of bounds");
        dgOff = static_cast<size_t>(o);
        dgLen = static_cast<size_t>(l);
      }
      if (dgLen == 0) return Napi::Number::New(env, outputFlag());
      pipe_->in = dg.Data() + dgOff;
      pipe_->inLen = dgLen;
    }
    uint32_t flags = 0;
    uint32_t count = 0;
    ERR_clear_error();
    if (state_ == State::Handshaking) {
      int r = SSL_do_handshake(ssl_);
      if (r == 1) {
        flags |= F_HANDSHAKE_DONE;
        size_t mtu = DTLS_get_data_mtu(ssl_);
        maxRecord_ = mtu > kMaxPlain ? kMaxPlain : mtu;
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
      while (true) {
        if (count >= maxCount || slabLen - off < kMaxPlain) {
          flags |= F_MORE;
          break;
        }
        size_t room = slabLen - off;
        int n = SSL_read(ssl_, slab.Data() + off, room > INT_MAX ? INT_MAX : static_cast<int>(room));
        if (n > 0 && fwdFd_ >= 0 && forwardable(slab.Data() + off, static_cast<size_t>(n))) {
          // The slab space is reused for the next record: nothing was handed to JS.
          if (write(fwdFd_, slab.Data() + off, static_cast<size_t>(n)) == n) {
            fwdPackets_ += 1;
            fwdBytes_ += n;
          } else {
            fwdDropped_ += 1;  // full queue or link down: a lost packet, like on a wire
          }
          continue;
        }
        if (n > 0) {
          lens[count++] = static_cast<uint32_t>(n);
          off += static_cast<size_t>(n);
          continue;
        }
        int e = SSL_get_error(ssl_, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
        if (e == SSL_ERROR_ZERO_RETURN) {
          flags |= F_PEER_CLOSED;
          SSL_shutdown(ssl_);  // our close_notify in reply
          state_ = State::Closed;
          break;
        }
        fail("read failed");
        flags |= F_FATAL;
        break;
      }
    }
    if (pipe_) {
      pipe_->in = nullptr;
      pipe_->inLen = 0;
    }
    ERR_clear_error();
    return Napi::Number::New(env, static_cast<double>(flags | outputFlag()) + static_cast<double>(count) * 256.0);
  }

  // setForward(fd, sourceIpv4HostOrder, mtu): fd < 0 turns forwarding off.
  Napi::Value SetForward(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber())
      throwCode(env, "EDTLS_USAGE", "setForward(fd, sourceIp, mtu)");
    int fd = info[0].As<Napi::Number>().Int32Value();
    double ip = info[1].As<Napi::Number>().DoubleValue();
    double mtu = info[2].As<Napi::Number>().DoubleValue();
    if (!(ip >= 0 && ip <= 4294967295.0) || !(mtu >= 20 && mtu <= 65535))
      throwCode(env, "EDTLS_USAGE", "sourceIp must be a uint32 and mtu 20..65535");
    fwdFd_ = fd < 0 ? -1 : fd;
    fwdSrc_ = htonl(static_cast<uint32_t>(ip));
    fwdMtu_ = static_cast<size_t>(mtu);
    return env.Undefined();
  }

  // forwardStats(): [packets, bytes, dropped] forwarded natively.
  Napi::Value ForwardStats(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Napi::Array a = Napi::Array::New(env, 3);
    a.Set(0u, Napi::Number::New(env, fwdPackets_));
    a.Set(1u, Napi::Number::New(env, fwdBytes_));
    a.Set(2u, Napi::Number::New(env, fwdDropped_));
    return a;
  }

  Napi::Value Timeout(const Napi::CallbackInfo &info) {
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
    return Napi::Number::New(env, flags | outputFlag());
  }

  // Milliseconds until the DTLS retransmission timer fires, or -1 when it is not running.
  Napi::Value NextTimeout(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (ssl_ == nullptr || state_ != State::Handshaking) return Napi::Number::New(env, -1);
    timeval tv{};
    if (DTLSv1_get_timeout(ssl_, &tv) != 1) return Napi::Number::New(env, -1);
    double ms = static_cast<double>(tv.tv_sec) * 1000.0 + static_cast<double>(tv.tv_usec + 999) / 1000.0;
    return Napi::Number::New(env, ms);
  }

  // Server: the verdict accepted the peer; send the held final flight.
  Napi::Value Release(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (ssl_ == nullptr || state_ != State::Held) return Napi::Number::New(env, F_CLOSED);
    flushHeld();
    state_ = State::Open;
    return Napi::Number::New(env, outputFlag());
  }

  // Server: the verdict rejected the peer (or the deadline passed). Drops the held final flight and
  // sends a fatal alert in epoch 0, which the client still reads (it has not seen our
  // ChangeCipherSpec), so the peer learns why.
  Napi::Value Reject(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) throwCode(env, "EDTLS_USAGE", "reject(alertDescription)");
    int desc = info[0].As<Napi::Number>().Int32Value();
    if (desc < 0 || desc > 255) throwCode(env, "EDTLS_USAGE", "alert description out of range");
    if (ssl_ == nullptr || state_ == State::Closed) return Napi::Number::New(env, F_CLOSED);
    pipe_->held.clear();
    pipe_->heldEnds.clear();
    pipe_->hold = false;
    uint64_t seq = pipe_->sawEpoch0 ? pipe_->maxEpoch0Seq + 1 : 0;
    uint8_t rec[kRecordHeader + 2] = {21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, static_cast<uint8_t>(desc)};
    for (int i = 0; i < 6; i++) rec[10 - i] = static_cast<uint8_t>(seq >> (8 * i));
    emitDatagram(pipe_.get(), rec, sizeof rec);
    pipe_->alertSent = (2 << 8) | desc;
    state_ = State::Closed;
    return Napi::Number::New(env, outputFlag());
  }

  // send(data: Uint8Array): 1 sent (| F_OUTPUT<<1 if queued), 0 closed, -1 too large / empty, -2 failed
  Napi::Value Send(const Napi::CallbackInfo &info) {
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
    if (ssl_ == nullptr || state_ != State::Open) return Napi::Number::New(env, 0);
    const size_t len = elements;
    if (len == 0 || len > maxRecord_ || data == nullptr) return Napi::Number::New(env, -1);
    ERR_clear_error();
    int r = SSL_write(ssl_, data, static_cast<int>(len));
    if (r != static_cast<int>(len)) {
      fail("write failed");
      return Napi::Number::New(env, -2);
    }
    return Napi::Number::New(env, 1 + (outputFlag() << 1));
  }

  // Sends close_notify (established) and closes. Returns flags.
  Napi::Value Shutdown(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (ssl_ == nullptr || state_ == State::Closed) return Napi::Number::New(env, F_CLOSED);
    ERR_clear_error();
    if (state_ == State::Open) SSL_shutdown(ssl_);
    pipe_->held.clear();
    pipe_->heldEnds.clear();
    pipe_->hold = false;
    state_ = State::Closed;
    ERR_clear_error();
    return Napi::Number::New(env, outputFlag());
  }

  Napi::Value TakeOutput(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!pipe_ || pipe_->outEnds.empty()) return env.Undefined();
    Napi::Array arr = Napi::Array::New(env, pipe_->outEnds.size());
    size_t start = 0;
    uint32_t i = 0;
    for (size_t end : pipe_->outEnds) {
      arr.Set(i++, Napi::Buffer<uint8_t>::Copy(env, pipe_->out.data() + start, end - start));
      start = end;
    }
    pipe_->out.clear();
    pipe_->outEnds.clear();
    return arr;
  }

  // DER of the peer's certificate chain, leaf first.
  Napi::Value PeerChain(const Napi::CallbackInfo &info) {
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

  Napi::Value Info(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    const char *st = state_ == State::Handshaking ? "handshaking"
                     : state_ == State::Held      ? "held"
                     : state_ == State::Open      ? "open"
                                                  : "closed";
    o.Set("state", st);
    o.Set("error", error_);
    o.Set("maxRecord", Napi::Number::New(env, static_cast<double>(maxRecord_)));
    if (ssl_ != nullptr) {
      const char *c = SSL_get_cipher_name(ssl_);
      o.Set("cipher", c != nullptr ? c : "");
      o.Set("version", SSL_get_version(ssl_));
    }
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

  Napi::Value SetFd(const Napi::CallbackInfo &info) {
    if (info.Length() < 1 || !info[0].IsNumber()) throwCode(info.Env(), "EDTLS_USAGE", "setFd(fd)");
    if (pipe_) pipe_->fd = info[0].As<Napi::Number>().Int32Value();
    return info.Env().Undefined();
  }

  Napi::Value Free(const Napi::CallbackInfo &info) {
    release();
    return info.Env().Undefined();
  }
};

// ---------------------------------------------------------------------------------------------
// Context: an SSL_CTX (server or client) and, for servers, the stateless listener.

class Context : public Napi::ObjectWrap<Context> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Context",
                       {
                           InstanceMethod<&Context::Listen>("listen"),
                           InstanceMethod<&Context::Connect>("connect"),
                           InstanceMethod<&Context::RotateCookieSecret>("rotateCookieSecret"),
                           InstanceMethod<&Context::SetFd>("setFd"),
                           InstanceMethod<&Context::TakeOutput>("takeOutput"),
                           InstanceMethod<&Context::Free>("free"),
                       });
  }

  // new Context({ server, identities: [{certPem, keyPem}], cipherList, caPem?, mtu })
  explicit Context(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Context>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throwCode(env, "EDTLS_USAGE", "new Context(options)");
    Napi::Object o = info[0].As<Napi::Object>();
    auto cs = std::make_shared<CtxShared>();
    cs->server = o.Get("server").ToBoolean().Value();
    Napi::Value mtuV = o.Get("mtu");
    if (mtuV.IsNumber()) cs->linkMtu = mtuV.As<Napi::Number>().Int32Value();
    if (cs->linkMtu < 576 || cs->linkMtu > 65535) throwCode(env, "EDTLS_USAGE", "mtu must be within 576..65535");
    ERR_clear_error();
    cs->ctx = SSL_CTX_new(DTLS_method());
    if (cs->ctx == nullptr) throwSsl(env, "EDTLS_INTERNAL", "SSL_CTX_new");
    SSL_CTX *ctx = cs->ctx;
    SSL_CTX_set_app_data(ctx, cs.get());
    if (SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, DTLS1_2_VERSION) != 1)
      throwSsl(env, "EDTLS_INTERNAL", "cannot restrict to DTLS 1.2");
    uint64_t opts = SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_QUERY_MTU | SSL_OP_NO_COMPRESSION;
    if (cs->server) opts |= SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_COOKIE_EXCHANGE;
    SSL_CTX_set_options(ctx, opts);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    // Idle sessions are the common case on a gateway: give the record buffers back while a
    // session has nothing pending, instead of holding ~34 KiB per SSL object forever.
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    // A record carries one IP packet (≤ the link MTU), so the write buffer need not be sized
    // for 16 KiB records: ~15 KiB less per session. Handshake messages are fragmented anyway.
    SSL_CTX_set_max_send_fragment(ctx, 2048);
    SSL_CTX_set_info_callback(ctx, infoCallback);

    std::string ciphers = o.Get("cipherList").ToString().Utf8Value();
    if (SSL_CTX_set_cipher_list(ctx, ciphers.c_str()) != 1)
      throwSsl(env, "EDTLS_CIPHERS", "no usable cipher in '" + ciphers + "'");

    Napi::Value idsV = o.Get("identities");
    if (!idsV.IsArray()) throwCode(env, "EDTLS_USAGE", "identities must be an array");
    Napi::Array ids = idsV.As<Napi::Array>();
    if (ids.Length() == 0) throwCode(env, "EDTLS_IDENTITY", "at least one identity (certificate and key) is required");
    for (uint32_t i = 0; i < ids.Length(); i++) {
      Napi::Value v = ids.Get(i);
      if (!v.IsObject()) throwCode(env, "EDTLS_USAGE", "identity must be an object");
      Napi::Object id = v.As<Napi::Object>();
      loadIdentity(env, ctx, id.Get("certPem").ToString().Utf8Value(), id.Get("keyPem").ToString().Utf8Value());
    }

    if (cs->server) {
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT | SSL_VERIFY_CLIENT_ONCE, nullptr);
      SSL_CTX_set_cert_verify_callback(ctx, acceptChainAndHold, nullptr);
      SSL_CTX_set_cookie_generate_cb(ctx, generateCookie);
      SSL_CTX_set_cookie_verify_cb(ctx, verifyCookie);
      if (RAND_bytes(cs->secret[0], sizeof cs->secret[0]) != 1) throwSsl(env, "EDTLS_INTERNAL", "RAND_bytes");
    } else {
      Napi::Value caV = o.Get("caPem");
      std::string caPem = caV.IsString() ? caV.As<Napi::String>().Utf8Value() : std::string();
      if (caPem.empty() || caPem.size() > INT_MAX)
        throwCode(env, "EDTLS_CA", "the client needs the server certificate (caPem) to pin");
      X509_STORE *store = SSL_CTX_get_cert_store(ctx);
      BIO *b = BIO_new_mem_buf(caPem.data(), static_cast<int>(caPem.size()));
      if (b == nullptr) throwSsl(env, "EDTLS_INTERNAL", "BIO_new_mem_buf");
      int added = 0;
      X509 *x;
      while ((x = PEM_read_bio_X509(b, nullptr, noPassword, nullptr)) != nullptr) {
        if (X509_STORE_add_cert(store, x) == 1) added++;
        X509_free(x);
      }
      BIO_free(b);
      ERR_clear_error();
      if (added == 0) throwCode(env, "EDTLS_CA", "caPem contains no certificate");
      // The pinned certificate is trusted by itself even when it is not self-signed.
      X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), X509_V_FLAG_PARTIAL_CHAIN);
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    }
    ERR_clear_error();
    shared_ = std::move(cs);
  }

  ~Context() override { freeAll(); }

 private:
  std::shared_ptr<CtxShared> shared_;
  SSL *listener_ = nullptr;
  std::unique_ptr<Pipe> listenerPipe_;
  BIO_ADDR *clientAddr_ = nullptr;
  int fd_ = -1;

  void freeListener() {
    if (listener_ != nullptr) {
      SSL_free(listener_);
      listener_ = nullptr;
      --gLiveSsl;
    }
    listenerPipe_.reset();
  }

  void freeAll() {
    freeListener();
    if (clientAddr_ != nullptr) {
      BIO_ADDR_free(clientAddr_);
      clientAddr_ = nullptr;
    }
    shared_.reset();
  }

  void requireLive(Napi::Env env) const {
    if (!shared_) throwCode(env, "EDTLS_USAGE", "context is freed");
  }

  Napi::Object makeConn(Napi::Env env, SSL *ssl, std::unique_ptr<Pipe> pipe) {
    ConnInit init{ssl, std::move(pipe), shared_};
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

  // listen(datagram, address, port): a Conn when the datagram is a ClientHello with a valid cookie;
  // otherwise a number: 0 dropped, 1 HelloVerifyRequest sent, 2 HelloVerifyRequest queued
  // (takeOutput()). Nothing is kept for a peer until its cookie is valid.
  Napi::Value Listen(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    requireLive(env);
    if (!shared_->server) throwCode(env, "EDTLS_USAGE", "listen() needs a server context");
    if (info.Length() < 3 || !info[0].IsBuffer() || !info[1].IsString() || !info[2].IsNumber())
      throwCode(env, "EDTLS_USAGE", "listen(datagram, address, port)");
    auto dg = info[0].As<Napi::Buffer<uint8_t>>();
    size_t dgOff = 0;
    size_t dgLen = dg.Length();
    if (info.Length() >= 5 && info[3].IsNumber() && info[4].IsNumber()) {
      // listen(arena, address, port, datagramOffset, datagramLength)
      double o = info[3].As<Napi::Number>().DoubleValue();
      double l = info[4].As<Napi::Number>().DoubleValue();
      if (!(o >= 0) || !(l >= 0) || o + l > static_cast<double>(dg.Length()))
        throwCode(env, "EDTLS_USAGE", "datagram range out of bounds");
      dgOff = static_cast<size_t>(o);
      dgLen = static_cast<size_t>(l);
    }
    if (dgLen < kRecordHeader) return Napi::Number::New(env, 0);
    if (listener_ == nullptr) {
      listenerPipe_ = std::make_unique<Pipe>();
      listener_ = newSsl(env, shared_.get(), listenerPipe_.get());
    }
    if (clientAddr_ == nullptr) {
      clientAddr_ = BIO_ADDR_new();
      if (clientAddr_ == nullptr) throwSsl(env, "EDTLS_INTERNAL", "BIO_ADDR_new");
    }
    Pipe *p = listenerPipe_.get();
    if (!parseAddress(info[1].As<Napi::String>().Utf8Value(), info[2].As<Napi::Number>().Int32Value(), &p->peer,
                      &p->peerLen, &p->cookieKey))
      throwCode(env, "EDTLS_USAGE", "bad peer address");
    p->mtuOverhead = p->peer.ss_family == AF_INET6 ? 48 : 28;
    p->fd = fd_;
    p->in = dg.Data() + dgOff;
    p->inLen = dgLen;
    size_t directBefore = gDirectSends.load();
    size_t queuedBefore = p->outEnds.size();
    ERR_clear_error();
    int r = DTLSv1_listen(listener_, clientAddr_);
    p->in = nullptr;
    p->inLen = 0;
    ERR_clear_error();
    if (r == 1) {
      SSL *ssl = listener_;
      std::unique_ptr<Pipe> pipe = std::move(listenerPipe_);
      listener_ = nullptr;
      pipe->hold = false;
      pipe->sawEpoch0 = false;
      pipe->maxEpoch0Seq = 0;
      pipe->alertRecv = pipe->alertSent = -1;
      DTLS_set_link_mtu(ssl, shared_->linkMtu);
      Napi::Object conn = makeConn(env, ssl, std::move(pipe));
      // The next listener right away, so that the count of live SSL objects of a server is
      // (sessions + handshakes + 1) at all times.
      listenerPipe_ = std::make_unique<Pipe>();
      listener_ = newSsl(env, shared_.get(), listenerPipe_.get());
      listenerPipe_->fd = fd_;
      return conn;
    }
    if (r < 0) {
      // Fatal for the listener object only: start a fresh one next time.
      freeListener();
      return Napi::Number::New(env, 0);
    }
    if (p->outEnds.size() > queuedBefore) return Napi::Number::New(env, 2);
    if (gDirectSends.load() > directBefore) return Napi::Number::New(env, 1);
    return Napi::Number::New(env, 0);
  }

  // connect(address, port, fd): a client Conn; call input(null, ...) to send the ClientHello.
  Napi::Value Connect(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    requireLive(env);
    if (shared_->server) throwCode(env, "EDTLS_USAGE", "connect() needs a client context");
    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsNumber() || !info[2].IsNumber())
      throwCode(env, "EDTLS_USAGE", "connect(address, port, fd)");
    auto pipe = std::make_unique<Pipe>();
    if (!parseAddress(info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::Number>().Int32Value(), &pipe->peer,
                      &pipe->peerLen, nullptr))
      throwCode(env, "EDTLS_USAGE", "bad server address");
    pipe->mtuOverhead = pipe->peer.ss_family == AF_INET6 ? 48 : 28;
    pipe->fd = info[2].As<Napi::Number>().Int32Value();
    ERR_clear_error();
    SSL *ssl = newSsl(env, shared_.get(), pipe.get());
    return makeConn(env, ssl, std::move(pipe));
  }

  Napi::Value RotateCookieSecret(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    requireLive(env);
    std::memcpy(shared_->secret[1], shared_->secret[0], sizeof shared_->secret[0]);
    shared_->havePrevious = true;
    if (RAND_bytes(shared_->secret[0], sizeof shared_->secret[0]) != 1) throwSsl(env, "EDTLS_INTERNAL", "RAND_bytes");
    return env.Undefined();
  }

  Napi::Value SetFd(const Napi::CallbackInfo &info) {
    if (info.Length() < 1 || !info[0].IsNumber()) throwCode(info.Env(), "EDTLS_USAGE", "setFd(fd)");
    fd_ = info[0].As<Napi::Number>().Int32Value();
    if (listenerPipe_) listenerPipe_->fd = fd_;
    return info.Env().Undefined();
  }

  Napi::Value TakeOutput(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!listenerPipe_ || listenerPipe_->outEnds.empty()) return env.Undefined();
    Pipe *p = listenerPipe_.get();
    Napi::Array arr = Napi::Array::New(env, p->outEnds.size());
    size_t start = 0;
    uint32_t i = 0;
    for (size_t end : p->outEnds) {
      arr.Set(i++, Napi::Buffer<uint8_t>::Copy(env, p->out.data() + start, end - start));
      start = end;
    }
    p->out.clear();
    p->outEnds.clear();
    return arr;
  }

  Napi::Value Free(const Napi::CallbackInfo &info) {
    freeAll();
    return info.Env().Undefined();
  }
};


// ---------------------------------------------------------------------------------------------
// Endpoint: a UDP socket read with recvmmsg(2) in batches, driven by a libuv poll handle on node's
// loop. JavaScript gets onBatch(count) with, for datagram i, meta[4i..4i+3] = offset in the arena,
// length (0 = truncated, drop), IPv4 address (host order), port. The arena is reused by the next
// batch: everything must be consumed during the callback.

constexpr unsigned kBatch = 32;
constexpr size_t kSlot = 16384 + 2048;  // the largest DTLS record plus headers
constexpr int kRoundsPerWakeup = 8;     // then yield to the loop (level-triggered: it comes back)

class Endpoint : public Napi::ObjectWrap<Endpoint> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Endpoint",
                       {
                           InstanceMethod<&Endpoint::Start>("start"),
                           InstanceMethod<&Endpoint::Close>("close"),
                           InstanceMethod<&Endpoint::SendTo>("sendTo"),
                           InstanceAccessor<&Endpoint::Arena>("arena"),
                           InstanceAccessor<&Endpoint::Meta>("meta"),
                           InstanceAccessor<&Endpoint::Fd>("fd"),
                       });
  }

  // new Endpoint(fd, onBatch, batch?): takes ownership of fd (an IPv4 UDP socket, non-blocking);
  // batch (1..32, default 32) datagrams are read per recvmmsg call (a client needs few).
  explicit Endpoint(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Endpoint>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsFunction())
      throwCode(env, "EDTLS_USAGE", "new Endpoint(fd, onBatch, batch?)");
    if (info.Length() >= 3 && info[2].IsNumber()) {
      int b = info[2].As<Napi::Number>().Int32Value();
      if (b < 1 || b > static_cast<int>(kBatch)) throwCode(env, "EDTLS_USAGE", "batch must be 1..32");
      batch_ = static_cast<unsigned>(b);
    }
    fd_ = info[0].As<Napi::Number>().Int32Value();
    if (fd_ < 0) throwCode(env, "EDTLS_USAGE", "bad fd");
    onBatch_ = Napi::Persistent(info[1].As<Napi::Function>());
    arena_ = Napi::Persistent(Napi::Buffer<uint8_t>::New(env, kSlot * batch_));
    arenaData_ = arena_.Value().Data();
    meta_ = Napi::Persistent(Napi::Uint32Array::New(env, batch_ * 4));
    metaData_ = meta_.Value().Data();
    for (unsigned i = 0; i < batch_; i++) {
      iov_[i].iov_base = arenaData_ + i * kSlot;
      iov_[i].iov_len = kSlot;
    }
    env_ = env;
    ++gLiveEndpoint;
  }

  ~Endpoint() override {
    // Only reached when not polling (a polling endpoint holds a reference to itself).
    closeFd();
  }

 private:
  int fd_ = -1;
  unsigned batch_ = kBatch;
  napi_env env_ = nullptr;
  uv_poll_t poll_{};
  bool polling_ = false;
  bool closing_ = false;
  Napi::FunctionReference onBatch_;
  Napi::FunctionReference onClosed_;
  std::unique_ptr<Napi::AsyncContext> async_;
  Napi::Reference<Napi::Buffer<uint8_t>> arena_;
  Napi::Reference<Napi::Uint32Array> meta_;
  uint8_t *arenaData_ = nullptr;
  uint32_t *metaData_ = nullptr;
  iovec iov_[kBatch]{};
  sockaddr_in addrs_[kBatch]{};
  mmsghdr msgs_[kBatch]{};

  // Closes the socket once; gLiveEndpoint counts open sockets.
  void closeFd() {
    if (fd_ < 0) return;
    close(fd_);
    fd_ = -1;
    --gLiveEndpoint;
  }

  Napi::Value Arena(const Napi::CallbackInfo &info) { return arena_.IsEmpty() ? info.Env().Undefined() : arena_.Value(); }
  Napi::Value Meta(const Napi::CallbackInfo &info) { return meta_.IsEmpty() ? info.Env().Undefined() : meta_.Value(); }
  Napi::Value Fd(const Napi::CallbackInfo &info) { return Napi::Number::New(info.Env(), closing_ ? -1 : fd_); }

  Napi::Value Start(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (polling_ || closing_) throwCode(env, "EDTLS_USAGE", "endpoint already started or closed");
    uv_loop_t *loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr)
      throwCode(env, "EDTLS_INTERNAL", "no event loop");
    int r = uv_poll_init(loop, &poll_, fd_);
    if (r != 0) throwCode(env, "EDTLS_SOCKET", std::string("uv_poll_init: ") + uv_strerror(r));
    poll_.data = this;
    async_ = std::make_unique<Napi::AsyncContext>(env, "seng-dtls-udp");
    r = uv_poll_start(&poll_, UV_READABLE, OnPoll);
    if (r != 0) {
      // libuv owns the handle until its close callback: stay alive until then.
      closing_ = true;
      polling_ = true;
      Ref();
      uv_close(reinterpret_cast<uv_handle_t *>(&poll_), OnClosed);
      throwCode(env, "EDTLS_SOCKET", std::string("uv_poll_start: ") + uv_strerror(r));
    }
    polling_ = true;
    Ref();  // alive while libuv holds a pointer to us
    return env.Undefined();
  }

  // close(onClosed?): stops reading; the socket is closed once libuv has let go of the handle,
  // then onClosed() runs.
  Napi::Value Close(const Napi::CallbackInfo &info) {
    if (closing_) return info.Env().Undefined();
    closing_ = true;
    if (info.Length() >= 1 && info[0].IsFunction()) onClosed_ = Napi::Persistent(info[0].As<Napi::Function>());
    if (polling_) {
      uv_poll_stop(&poll_);
      uv_close(reinterpret_cast<uv_handle_t *>(&poll_), OnClosed);
    } else {
      closeFd();
      Napi::FunctionReference cb = std::move(onClosed_);
      release();
      if (!cb.IsEmpty()) cb.Call({});
    }
    return info.Env().Undefined();
  }

  static void OnClosed(uv_handle_t *h) {
    auto *self = static_cast<Endpoint *>(h->data);
    self->closeFd();
    self->polling_ = false;
    Napi::Env env(self->env_);
    Napi::HandleScope scope(env);
    if (!self->onClosed_.IsEmpty()) {
      Napi::FunctionReference cb = std::move(self->onClosed_);
      try {
        cb.MakeCallback(env.Global(), {}, self->async_ ? static_cast<napi_async_context>(*self->async_) : nullptr);
      } catch (const Napi::Error &e) {
        napi_fatal_exception(self->env_, e.Value());
      }
    }
    self->async_.reset();
    self->release();
    self->Unref();
  }

  // Drops the references to JavaScript (the batch handler's closure refers back to this object:
  // kept, the persistent handles would keep the whole graph alive forever).
  void release() {
    onBatch_.Reset();
    onClosed_.Reset();
    arena_.Reset();
    meta_.Reset();
    arenaData_ = nullptr;
    metaData_ = nullptr;
  }

  // sendTo(buffer, ipv4HostOrder, port): bool (for datagrams queued in memory, rarely used).
  Napi::Value SendTo(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsBuffer() || !info[1].IsNumber() || !info[2].IsNumber())
      throwCode(env, "EDTLS_USAGE", "sendTo(buffer, ipv4, port)");
    uint32_t port = info[2].As<Napi::Number>().Uint32Value();
    if (port == 0 || port > 65535) throwCode(env, "EDTLS_USAGE", "port out of range");
    if (closing_ || fd_ < 0) return Napi::Boolean::New(env, false);
    auto b = info[0].As<Napi::Buffer<uint8_t>>();
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl(info[1].As<Napi::Number>().Uint32Value());
    to.sin_port = htons(static_cast<uint16_t>(port));
    ssize_t r = sendto(fd_, b.Data(), b.Length(), MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<sockaddr *>(&to), sizeof to);
    if (r == static_cast<ssize_t>(b.Length())) ++gDirectSends;
    else ++gDroppedSends;
    return Napi::Boolean::New(env, r == static_cast<ssize_t>(b.Length()));
  }

  static void OnPoll(uv_poll_t *h, int status, int events) {
    auto *self = static_cast<Endpoint *>(h->data);
    if (self == nullptr || self->closing_ || self->metaData_ == nullptr || status < 0 || (events & UV_READABLE) == 0)
      return;
    self->Drain();
  }

  void Drain() {
    Napi::Env env(env_);
    Napi::HandleScope scope(env);
    for (int round = 0; round < kRoundsPerWakeup && !closing_; round++) {
      for (unsigned i = 0; i < batch_; i++) {
        std::memset(&msgs_[i].msg_hdr, 0, sizeof msgs_[i].msg_hdr);
        msgs_[i].msg_hdr.msg_iov = &iov_[i];
        msgs_[i].msg_hdr.msg_iovlen = 1;
        msgs_[i].msg_hdr.msg_name = &addrs_[i];
        msgs_[i].msg_hdr.msg_namelen = sizeof addrs_[i];
        msgs_[i].msg_len = 0;
      }
      int n;
      do {
        n = recvmmsg(fd_, msgs_, batch_, MSG_DONTWAIT, nullptr);
      } while (n < 0 && errno == EINTR);
      if (n <= 0) return;  // EAGAIN (or an error such as ECONNREFUSED from ICMP: nothing to read)
      for (int i = 0; i < n; i++) {
        const msghdr &m = msgs_[i].msg_hdr;
        bool ok = (m.msg_flags & MSG_TRUNC) == 0 && m.msg_namelen >= sizeof(sockaddr_in) &&
                  addrs_[i].sin_family == AF_INET && msgs_[i].msg_len <= kSlot;
        metaData_[4 * i] = static_cast<uint32_t>(i * kSlot);
        metaData_[4 * i + 1] = ok ? msgs_[i].msg_len : 0;
        metaData_[4 * i + 2] = ntohl(addrs_[i].sin_addr.s_addr);
        metaData_[4 * i + 3] = ntohs(addrs_[i].sin_port);
      }
      try {
        onBatch_.MakeCallback(env.Global(), {Napi::Number::New(env, n)}, *async_);
      } catch (const Napi::Error &e) {
        // An exception from the batch handler is an uncaught exception of the process, like one
        // thrown by a node event listener.
        napi_fatal_exception(env_, e.Value());
        return;
      }
      if (static_cast<unsigned>(n) < batch_) return;
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Module functions.

Napi::Value NativeStats(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("liveSsl", Napi::Number::New(env, static_cast<double>(gLiveSsl.load())));
  o.Set("liveCtx", Napi::Number::New(env, static_cast<double>(gLiveCtx.load())));
  o.Set("liveConn", Napi::Number::New(env, static_cast<double>(gLiveConn.load())));
  o.Set("livePipe", Napi::Number::New(env, static_cast<double>(gLivePipe.load())));
  o.Set("liveEndpoint", Napi::Number::New(env, static_cast<double>(gLiveEndpoint.load())));
  o.Set("directSends", Napi::Number::New(env, static_cast<double>(gDirectSends.load())));
  o.Set("queuedSends", Napi::Number::New(env, static_cast<double>(gQueuedSends.load())));
  o.Set("droppedSends", Napi::Number::New(env, static_cast<double>(gDroppedSends.load())));
  return o;
}

// openUdp(address, port, bufferBytes): { fd, port }. A non-blocking UDP socket bound to
// address:port (0 = ephemeral), for node's dgram (bind({ fd })) and our direct sends.
Napi::Value OpenUdp(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsNumber() || !info[2].IsNumber())
    throwCode(env, "EDTLS_USAGE", "openUdp(address, port, bufferBytes)");
  sockaddr_storage ss{};
  socklen_t len = 0;
  std::string host = info[0].As<Napi::String>().Utf8Value();
  int port = info[1].As<Napi::Number>().Int32Value();
  if (!parseAddress(host, port, &ss, &len, nullptr)) throwCode(env, "EDTLS_ADDRESS", "not an IP address: " + host);
  int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throwCode(env, "EDTLS_SOCKET", std::string("socket: ") + std::strerror(errno));
  int bufBytes = info[2].As<Napi::Number>().Int32Value();
  if (bufBytes > 0) {
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufBytes, sizeof bufBytes);
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufBytes, sizeof bufBytes);
  }
  if (bind(fd, reinterpret_cast<sockaddr *>(&ss), len) != 0) {
    int e = errno;
    close(fd);
    const char *code = e == EADDRINUSE ? "EADDRINUSE" : e == EADDRNOTAVAIL ? "EADDRNOTAVAIL" : e == EACCES ? "EACCES" : "EDTLS_SOCKET";
    throwCode(env, code, "bind " + host + ":" + std::to_string(port) + ": " + std::strerror(e));
  }
  sockaddr_storage bound{};
  socklen_t blen = sizeof bound;
  int boundPort = port;
  if (getsockname(fd, reinterpret_cast<sockaddr *>(&bound), &blen) == 0) {
    boundPort = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6 *>(&bound)->sin6_port)
                                            : ntohs(reinterpret_cast<sockaddr_in *>(&bound)->sin_port);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("fd", fd);
  o.Set("port", boundPort);
  return o;
}

// closeFd(fd): for a socket that never made it into a dgram socket.
Napi::Value CloseFd(const Napi::CallbackInfo &info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throwCode(info.Env(), "EDTLS_USAGE", "closeFd(fd)");
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (fd >= 0) close(fd);
  return info.Env().Undefined();
}

Napi::Value AlertName(const Napi::CallbackInfo &info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throwCode(info.Env(), "EDTLS_USAGE", "alertName(code)");
  return Napi::String::New(info.Env(), SSL_alert_desc_string_long(info[0].As<Napi::Number>().Int32Value() & 0xff));
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  auto *data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  Napi::Function conn = Conn::Init(env);
  data->connCtor = Napi::Persistent(conn);
  exports.Set("Conn", conn);
  exports.Set("Context", Context::Init(env));
  exports.Set("Endpoint", Endpoint::Init(env));
  exports.Set("nativeStats", Napi::Function::New(env, NativeStats));
  exports.Set("openUdp", Napi::Function::New(env, OpenUdp));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd));
  exports.Set("alertName", Napi::Function::New(env, AlertName));
  exports.Set("opensslVersion", Napi::String::New(env, OpenSSL_version(OPENSSL_VERSION)));
  return exports;
}

}  // namespace

NODE_API_MODULE(seng_dtls, InitModule)
