/*
 * The OpenSSL floor of an ECDSA admission (issue 13): server-side CPU per DTLS 1.2 handshake, in
 * memory, with the gateway's SSL_CTX settings (native/dtls/src/context.cc), a P-256 gateway
 * certificate, an RA-TLS P-256 client certificate from the simulator, the cookie exchange through
 * DTLSv1_listen and a 1500-byte MTU; only the server's calls are timed (thread CPU time). Then the
 * public-key operations of one server handshake alone, in the same process and moment.
 *
 *   gcc -O2 -o /tmp/floor bench/handshake-floor.c -lssl -lcrypto      # system OpenSSL 3.0.x
 *   DIR=/tmp/hsfloor; mkdir -p $DIR
 *   openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
 *     -keyout $DIR/srv.key -out $DIR/srv.pem -days 30 -subj /CN=gw
 *   node --input-type=module -e "import {createSimCa,createSimCertificate} from './dist/src/attestation/sim.js';
 *     import {writeFileSync} from 'node:fs'; const c=createSimCertificate(createSimCa('$DIR/ca',{force:true}),
 *     {kind:'epid',mrEnclave:'aa'.repeat(32),mrSigner:'bb'.repeat(32),isvProdId:1});
 *     writeFileSync('$DIR/cli.pem',c.certPem); writeFileSync('$DIR/cli.key',c.keyPem)"
 *   /tmp/floor 400 $DIR 1        # handshakes, cert dir, cookie exchange (1) or not (0)
 *
 * Not part of the build or of npm test: a measuring tool (numbers in the report).
 */
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509_vfy.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QN 64
#define DG 2048
typedef struct { unsigned char d[QN][DG]; int len[QN]; int head, n; } dq;
typedef struct { dq *in, *out; } ends;

static int dq_write(BIO *b, const char *data, int len) {
  ends *e = BIO_get_data(b);
  if (e->out->n >= QN || len > DG) return len; /* lost */
  int i = (e->out->head + e->out->n) % QN;
  memcpy(e->out->d[i], data, len); e->out->len[i] = len; e->out->n++;
  return len;
}
static int dq_read(BIO *b, char *data, int len) {
  ends *e = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (e->in->n == 0) { BIO_set_retry_read(b); return -1; }
  int i = e->in->head; int n = e->in->len[i] < len ? e->in->len[i] : len;
  memcpy(data, e->in->d[i], n); e->in->head = (i + 1) % QN; e->in->n--;
  return n;
}
static long dq_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)b; (void)num; (void)ptr;
  switch (cmd) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_DGRAM_GET_MTU_OVERHEAD: return 28;
    case BIO_CTRL_DGRAM_SET_NEXT_TIMEOUT: case BIO_CTRL_DGRAM_SET_PEER: case BIO_CTRL_DGRAM_SET_CONNECTED: return 1;
    case BIO_CTRL_DGRAM_GET_FALLBACK_MTU: return 1472;
    default: return 0;
  }
}
static int dq_create(BIO *b) { BIO_set_init(b, 1); return 1; }
static BIO_METHOD *meth;

static unsigned char secret[32];
static int gen_cookie(SSL *s, unsigned char *c, unsigned int *l) {
  (void)s; unsigned int ml = 0; HMAC(EVP_sha256(), secret, 32, (const unsigned char *)"127.0.0.1:1", 11, c, &ml); *l = ml; return 1; }
static int ver_cookie(SSL *s, const unsigned char *c, unsigned int l) {
  unsigned char e[32]; unsigned int el = 32; gen_cookie(s, e, &el); return l == 32 && memcmp(e, c, 32) == 0; }
static int accept_all(X509_STORE_CTX *x, void *a) { (void)a; X509_STORE_CTX_set_error(x, X509_V_OK); return 1; }

static double tcpu(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + t.tv_nsec / 1e9; }

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 500;
  const char *dir = argc > 2 ? argv[2] : "/tmp/hsfloor";
  int listenMode = argc > 3 ? atoi(argv[3]) : 1;
  char p[512];
  RAND_bytes(secret, 32);
  meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "dq");
  BIO_meth_set_write(meth, dq_write); BIO_meth_set_read(meth, dq_read); BIO_meth_set_ctrl(meth, dq_ctrl); BIO_meth_set_create(meth, dq_create);

  SSL_CTX *sctx = SSL_CTX_new(DTLS_method());
  SSL_CTX_set_min_proto_version(sctx, DTLS1_2_VERSION); SSL_CTX_set_max_proto_version(sctx, DTLS1_2_VERSION);
  SSL_CTX_set_options(sctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_QUERY_MTU | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE | (listenMode ? SSL_OP_COOKIE_EXCHANGE : 0));
  SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_mode(sctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_max_send_fragment(sctx, 2048);
  SSL_CTX_set_cipher_list(sctx, "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256");
  snprintf(p, sizeof p, "%s/srv.pem", dir); SSL_CTX_use_certificate_file(sctx, p, SSL_FILETYPE_PEM);
  snprintf(p, sizeof p, "%s/srv.key", dir); SSL_CTX_use_PrivateKey_file(sctx, p, SSL_FILETYPE_PEM);
  SSL_CTX_set_verify(sctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT | SSL_VERIFY_CLIENT_ONCE, NULL);
  SSL_CTX_set_cert_verify_callback(sctx, accept_all, NULL);
  SSL_CTX_set_cookie_generate_cb(sctx, gen_cookie); SSL_CTX_set_cookie_verify_cb(sctx, ver_cookie);

  SSL_CTX *cctx = SSL_CTX_new(DTLS_method());
  SSL_CTX_set_min_proto_version(cctx, DTLS1_2_VERSION); SSL_CTX_set_max_proto_version(cctx, DTLS1_2_VERSION);
  SSL_CTX_set_options(cctx, SSL_OP_NO_TICKET | SSL_OP_NO_QUERY_MTU);
  SSL_CTX_set_cipher_list(cctx, "ECDHE-ECDSA-AES128-GCM-SHA256");
  snprintf(p, sizeof p, "%s/cli.pem", dir); SSL_CTX_use_certificate_file(cctx, p, SSL_FILETYPE_PEM);
  snprintf(p, sizeof p, "%s/cli.key", dir); SSL_CTX_use_PrivateKey_file(cctx, p, SSL_FILETYPE_PEM);
  snprintf(p, sizeof p, "%s/srv.pem", dir); SSL_CTX_load_verify_locations(cctx, p, NULL);
  SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);

  static dq c2s, s2c;
  ends ce = {&s2c, &c2s}, se = {&c2s, &s2c};
  double serverCpu = 0, clientCpu = 0, listenCpu = 0, newCpu = 0; int ok = 0;
  BIO_ADDR *addr = BIO_ADDR_new();
  for (int i = 0; i < n; i++) {
    memset(&c2s, 0, sizeof c2s); memset(&s2c, 0, sizeof s2c);
    double t0 = tcpu();
    SSL *s = SSL_new(sctx);
    BIO *sb = BIO_new(meth); BIO_set_data(sb, &se); SSL_set_bio(s, sb, sb);
    SSL_set_options(s, SSL_OP_NO_QUERY_MTU); DTLS_set_link_mtu(s, 1500); SSL_set_accept_state(s);
    newCpu += tcpu() - t0;
    double t1 = tcpu();
    SSL *c = SSL_new(cctx);
    BIO *cb = BIO_new(meth); BIO_set_data(cb, &ce); SSL_set_bio(c, cb, cb);
    SSL_set_options(c, SSL_OP_NO_QUERY_MTU); DTLS_set_link_mtu(c, 1500); SSL_set_connect_state(c);
    SSL_do_handshake(c);
    clientCpu += tcpu() - t1;
    int listened = !listenMode;
    for (int round = 0; round < 50; round++) {
      double t = tcpu();
      if (!listened) {
        int r = DTLSv1_listen(s, addr);
        listenCpu += tcpu() - t;
        if (r == 1) listened = 1;
        serverCpu += tcpu() - t;
        if (!listened) { double u = tcpu(); SSL_do_handshake(c); clientCpu += tcpu() - u; continue; }
        t = tcpu();
      }
      int rs = SSL_do_handshake(s);
      serverCpu += tcpu() - t;
      double u = tcpu();
      int rc = SSL_do_handshake(c);
      clientCpu += tcpu() - u;
      if (rs == 1 && rc == 1) { ok++; break; }
      if (rs <= 0 && SSL_get_error(s, rs) != SSL_ERROR_WANT_READ) { ERR_print_errors_fp(stderr); break; }
      if (rc <= 0 && SSL_get_error(c, rc) != SSL_ERROR_WANT_READ) { ERR_print_errors_fp(stderr); break; }
    }
    double t2 = tcpu();
    SSL_free(s);
    serverCpu += tcpu() - t2;
    SSL_free(c);
  }
  serverCpu += newCpu;
  printf("handshakes %d/%d (%s): server %.1f us/handshake (SSL_new+setup %.1f, DTLSv1_listen %.1f), client %.1f us\n", ok, n,
         listenMode ? "cookie exchange" : "no cookie", 1e6 * serverCpu / n, 1e6 * newCpu / n, 1e6 * listenCpu / n, 1e6 * clientCpu / n);
  /* The crypto model of one server handshake, same process and moment: ECDSA P-256 sign + verify,
   * P-256 keygen + ECDH (what BENCHMARKS.md's model counts), and X25519 keygen + derive (what the
   * handshake negotiated with the simulator's client). Contexts are reused: primitives only. */
  EVP_PKEY *ec = EVP_EC_gen("P-256"), *ec2 = EVP_EC_gen("P-256"), *xk = EVP_PKEY_Q_keygen(NULL, NULL, "X25519"), *xk2 = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
  unsigned char dig[32] = {1}, sig[80], sec[80]; size_t sl, kl; int m = 300;
  EVP_PKEY_CTX *sc = EVP_PKEY_CTX_new(ec, NULL); EVP_PKEY_sign_init(sc);
  EVP_PKEY_CTX *vc = EVP_PKEY_CTX_new(ec, NULL); EVP_PKEY_verify_init(vc);
  double a = tcpu();
  for (int i = 0; i < m; i++) { sl = sizeof sig; EVP_PKEY_sign(sc, sig, &sl, dig, 32); }
  double signUs = 1e6 * (tcpu() - a) / m; a = tcpu();
  for (int i = 0; i < m; i++) EVP_PKEY_verify(vc, sig, sl, dig, 32);
  double verUs = 1e6 * (tcpu() - a) / m; a = tcpu();
  for (int i = 0; i < m; i++) { EVP_PKEY *k = EVP_EC_gen("P-256"); EVP_PKEY_CTX *d = EVP_PKEY_CTX_new(k, NULL); EVP_PKEY_derive_init(d); EVP_PKEY_derive_set_peer(d, ec2); kl = sizeof sec; EVP_PKEY_derive(d, sec, &kl); EVP_PKEY_CTX_free(d); EVP_PKEY_free(k); }
  double ecdhUs = 1e6 * (tcpu() - a) / m; a = tcpu();
  for (int i = 0; i < m; i++) { EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "X25519"); EVP_PKEY_CTX *d = EVP_PKEY_CTX_new(k, NULL); EVP_PKEY_derive_init(d); EVP_PKEY_derive_set_peer(d, xk2); kl = sizeof sec; EVP_PKEY_derive(d, sec, &kl); EVP_PKEY_CTX_free(d); EVP_PKEY_free(k); }
  double xUs = 1e6 * (tcpu() - a) / m;
  (void)xk;
  printf("crypto: ECDSA P-256 sign %.1f us, verify %.1f us, P-256 keygen+ECDH %.1f us, X25519 keygen+derive %.1f us -> model per server handshake (P-256) %.1f us, (X25519) %.1f us\n",
         signUs, verUs, ecdhUs, xUs, signUs + verUs + ecdhUs, signUs + verUs + xUs);
  return ok == n ? 0 : 1;
}
