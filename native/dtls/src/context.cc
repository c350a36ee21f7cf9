// Context: SSL_CTX configuration and the stateless listener (see context.h).
#include "context.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <climits>
#include <cstring>
#include <string>

#include "address.h"
#include "conn.h"
#include "cookie.h"

namespace seng_dtls {

namespace {

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

// Records the alerts OpenSSL sends and receives in the pipe (for info() and close reasons).
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

// The client's trust store: the pinned gateway certificate(s), trusted by themselves even when
// they are not self-signed.
void pinServerCertificates(Napi::Env env, SSL_CTX *ctx, const std::string &caPem) {
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
  X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), X509_V_FLAG_PARTIAL_CHAIN);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
}

// Creates an SSL bound to `pipe` through our BIO (counted in gLiveSsl).
SSL *newSsl(Napi::Env env, SharedContext *cs, Pipe *pipe) {
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

}  // namespace

Napi::Function Context::Init(Napi::Env env) {
  return DefineClass(env, "Context",
                     {
                         InstanceMethod<&Context::Listen>("listen"),
                         InstanceMethod<&Context::CookieValid>("cookieValid"),
                         InstanceMethod<&Context::Connect>("connect"),
                         InstanceMethod<&Context::RotateCookieSecret>("rotateCookieSecret"),
                         InstanceMethod<&Context::SetFd>("setFd"),
                         InstanceMethod<&Context::Free>("free"),
                     });
}

// new Context({ server, identities: [{certPem, keyPem}], cipherList, caPem?, mtu })
Context::Context(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Context>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throwCode(env, "EDTLS_USAGE", "new Context(options)");
  Napi::Object o = info[0].As<Napi::Object>();
  auto cs = std::make_shared<SharedContext>();
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
  // Give the record buffers back while a connection has nothing pending, instead of holding
  // ~34 KiB per SSL object for as long as it lives.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  // A record carries one IP packet (≤ the link MTU), so the write buffer need not be sized
  // for 16 KiB records: ~15 KiB less per connection. Handshake messages are fragmented anyway.
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
    pinServerCertificates(env, ctx, caV.IsString() ? caV.As<Napi::String>().Utf8Value() : std::string());
  }
  ERR_clear_error();
  shared_ = std::move(cs);
}

Context::~Context() { freeAll(); }

void Context::freeListener() {
  if (listener_ != nullptr) {
    SSL_free(listener_);
    listener_ = nullptr;
    --gLiveSsl;
  }
  listenerPipe_.reset();
}

void Context::newListener(Napi::Env env) {
  listenerPipe_ = std::make_unique<Pipe>();
  listenerPipe_->fd = fd_;
  listener_ = newSsl(env, shared_.get(), listenerPipe_.get());
}

void Context::freeAll() {
  freeListener();
  if (clientAddr_ != nullptr) {
    BIO_ADDR_free(clientAddr_);
    clientAddr_ = nullptr;
  }
  shared_.reset();
}

void Context::requireLive(Napi::Env env) const {
  if (!shared_) throwCode(env, "EDTLS_USAGE", "context is freed");
}

// listen(datagram, address, port, datagramOffset?, datagramLength?): a Conn when the datagram is a
// ClientHello with a valid cookie; otherwise 0 (dropped) or 1 (HelloVerifyRequest sent). Nothing
// is kept for a peer until its cookie is valid.
Napi::Value Context::Listen(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  requireLive(env);
  if (!shared_->server) throwCode(env, "EDTLS_USAGE", "listen() needs a server context");
  if (info.Length() < 3 || !info[0].IsBuffer() || !info[1].IsString() || !info[2].IsNumber())
    throwCode(env, "EDTLS_USAGE", "listen(datagram, address, port)");
  auto dg = info[0].As<Napi::Buffer<uint8_t>>();
  size_t dgOff = 0;
  size_t dgLen = dg.Length();
  if (info.Length() >= 5 && info[3].IsNumber() && info[4].IsNumber()) {
    double o = info[3].As<Napi::Number>().DoubleValue();
    double l = info[4].As<Napi::Number>().DoubleValue();
    if (!(o >= 0) || !(l >= 0) || o + l > static_cast<double>(dg.Length()))
      throwCode(env, "EDTLS_USAGE", "datagram range out of bounds");
    dgOff = static_cast<size_t>(o);
    dgLen = static_cast<size_t>(l);
  }
  if (dgLen < kRecordHeader) return Napi::Number::New(env, 0);
  if (listener_ == nullptr) newListener(env);
  if (clientAddr_ == nullptr) {
    clientAddr_ = BIO_ADDR_new();
    if (clientAddr_ == nullptr) throwSsl(env, "EDTLS_INTERNAL", "BIO_ADDR_new");
  }
  Pipe *p = listenerPipe_.get();
  if (!parseAddress(info[1].As<Napi::String>().Utf8Value(), info[2].As<Napi::Number>().Int32Value(), &p->peer,
                    &p->peerLen, &p->cookieKey))
    throwCode(env, "EDTLS_USAGE", "bad peer address");
  p->mtuOverhead = udpOverhead(p->peer);
  p->fd = fd_;
  p->in = dg.Data() + dgOff;
  p->inLen = dgLen;
  const uint64_t sentBefore = gDirectSends.load() + gDroppedSends.load();
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
    pipe->sawSeq[0] = pipe->sawSeq[1] = false;
    pipe->lastSeq[0] = pipe->lastSeq[1] = 0;
    pipe->alertRecv = pipe->alertSent = -1;
    DTLS_set_link_mtu(ssl, shared_->linkMtu);
    Napi::Object conn = Conn::Create(env, ssl, std::move(pipe), shared_);
    // The next listener right away, so that the count of live SSL objects of a server is
    // (handshakes + 1) at all times.
    newListener(env);
    return conn;
  }
  if (r < 0) {
    // Fatal for the listener object only: start a fresh one next time.
    freeListener();
    return Napi::Number::New(env, 0);
  }
  // A HelloVerifyRequest was written (sent, or dropped by a full socket buffer: the client retries).
  return Napi::Number::New(env, gDirectSends.load() + gDroppedSends.load() > sentBefore ? 1 : 0);
}

// cookieValid(address, port, cookie, cookieOffset, cookieLength): true when bytes
// [cookieOffset, +cookieLength) of `cookie` are the cookie this server issued to address:port
// (current or previous secret). Nothing is parsed here: JavaScript finds the cookie in a
// ClientHello that cannot start yet and queues the hello only if this says its address is proven.
Napi::Value Context::CookieValid(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  requireLive(env);
  if (!shared_->server) throwCode(env, "EDTLS_USAGE", "cookieValid() needs a server context");
  if (info.Length() < 5 || !info[0].IsString() || !info[1].IsNumber() || !info[2].IsBuffer() || !info[3].IsNumber() ||
      !info[4].IsNumber())
    throwCode(env, "EDTLS_USAGE", "cookieValid(address, port, buffer, offset, length)");
  auto buf = info[2].As<Napi::Buffer<uint8_t>>();
  double o = info[3].As<Napi::Number>().DoubleValue();
  double l = info[4].As<Napi::Number>().DoubleValue();
  if (!(o >= 0) || !(l >= 0) || o + l > static_cast<double>(buf.Length()))
    throwCode(env, "EDTLS_USAGE", "cookie range out of bounds");
  sockaddr_storage ss{};
  socklen_t ssLen = 0;
  std::vector<uint8_t> key;
  if (!parseAddress(info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::Number>().Int32Value(), &ss, &ssLen, &key))
    throwCode(env, "EDTLS_USAGE", "bad peer address");
  ERR_clear_error();
  bool ok = cookieMatches(shared_.get(), key, buf.Data() + static_cast<size_t>(o), static_cast<size_t>(l));
  ERR_clear_error();
  return Napi::Boolean::New(env, ok);
}

// connect(address, port, fd): a client Conn sending on fd; call input(null, ...) to send the ClientHello.
Napi::Value Context::Connect(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  requireLive(env);
  if (shared_->server) throwCode(env, "EDTLS_USAGE", "connect() needs a client context");
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsNumber() || !info[2].IsNumber())
    throwCode(env, "EDTLS_USAGE", "connect(address, port, fd)");
  auto pipe = std::make_unique<Pipe>();
  if (!parseAddress(info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::Number>().Int32Value(), &pipe->peer,
                    &pipe->peerLen, nullptr))
    throwCode(env, "EDTLS_USAGE", "bad server address");
  pipe->mtuOverhead = udpOverhead(pipe->peer);
  pipe->fd = info[2].As<Napi::Number>().Int32Value();
  ERR_clear_error();
  SSL *ssl = newSsl(env, shared_.get(), pipe.get());
  return Conn::Create(env, ssl, std::move(pipe), shared_);
}

// rotateCookieSecret(): the current secret becomes the previous one (still accepted), a fresh one
// becomes current.
Napi::Value Context::RotateCookieSecret(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  requireLive(env);
  std::memcpy(shared_->secret[1], shared_->secret[0], sizeof shared_->secret[0]);
  shared_->havePrevious = true;
  if (RAND_bytes(shared_->secret[0], sizeof shared_->secret[0]) != 1) throwSsl(env, "EDTLS_INTERNAL", "RAND_bytes");
  return env.Undefined();
}

// setFd(fd): the server's UDP socket, for the listener's HelloVerifyRequests and every connection
// made from here on.
Napi::Value Context::SetFd(const Napi::CallbackInfo &info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throwCode(info.Env(), "EDTLS_USAGE", "setFd(fd)");
  fd_ = info[0].As<Napi::Number>().Int32Value();
  if (listenerPipe_) listenerPipe_->fd = fd_;
  return info.Env().Undefined();
}

Napi::Value Context::Free(const Napi::CallbackInfo &info) {
  freeAll();
  return info.Env().Undefined();
}

}  // namespace seng_dtls
