/*
 * The same measurement as bench/handshake-floor.c (issue 13) with wolfSSL instead of OpenSSL: server-side CPU per
 * DTLS 1.2 handshake in memory, ECDHE-ECDSA-AES128-GCM-SHA256 on P-256, client certificate required (accepted by a
 * callback, as the gateway's acceptChainAndHold), cookie exchange; only the server's calls are timed (thread CPU
 * time). Certificates as made for handshake-floor.c.
 *
 *   apt-get install -y libwolfssl-dev
 *   gcc -O2 -o /tmp/floor-x bench/handshake-floor-wolfssl.c -lwolfssl
 *   /tmp/floor-x 300 /tmp/hsfloor
 *
 * Not part of the build or of npm test: a measuring tool (numbers in bench/findings.md).
 */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define QN 64
#define DG 4096
typedef struct { unsigned char d[QN][DG]; int len[QN]; int head, n; } dq;
typedef struct { dq *in, *out; } ends;
static int io_send(WOLFSSL *s, char *buf, int len, void *ctx) { (void)s; ends *e = ctx; dq *q = e->out;
  if (q->n >= QN || len > DG) return len; int i = (q->head + q->n) % QN; memcpy(q->d[i], buf, len); q->len[i] = len; q->n++; return len; }
static int io_recv(WOLFSSL *s, char *buf, int len, void *ctx) { (void)s; ends *e = ctx; dq *q = e->in;
  if (q->n == 0) return WOLFSSL_CBIO_ERR_WANT_READ; int l = q->len[q->head]; if (l > len) l = len;
  memcpy(buf, q->d[q->head], l); q->head = (q->head + 1) % QN; q->n--; return l; }
static int gen_cookie(WOLFSSL *s, unsigned char *buf, int sz, void *ctx) { (void)s; (void)ctx;
  /* a fixed-peer HMAC stand-in is not needed for cost: wolfSSL hashes this into its cookie */
  static const unsigned char peer[6] = {10, 52, 0, 2, 0x30, 0x39}; int n = sz < 6 ? sz : 6; memcpy(buf, peer, n); return n; }
static int accept_any(int pre, WOLFSSL_X509_STORE_CTX *st) { (void)pre; (void)st; return 1; }
static double tcpu(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 200; const char *dir = argc > 2 ? argv[2] : "/tmp/hsfloor"; char p[512];
  wolfSSL_Init();
  WOLFSSL_CTX *sc = wolfSSL_CTX_new(wolfDTLSv1_2_server_method()), *cc = wolfSSL_CTX_new(wolfDTLSv1_2_client_method());
  snprintf(p, sizeof p, "%s/srv.pem", dir); if (wolfSSL_CTX_use_certificate_file(sc, p, SSL_FILETYPE_PEM) != 1) { puts("srv.pem"); return 1; }
  snprintf(p, sizeof p, "%s/srv.key", dir); if (wolfSSL_CTX_use_PrivateKey_file(sc, p, SSL_FILETYPE_PEM) != 1) { puts("srv.key"); return 1; }
  snprintf(p, sizeof p, "%s/cli.pem", dir); if (wolfSSL_CTX_use_certificate_file(cc, p, SSL_FILETYPE_PEM) != 1) { puts("cli.pem"); return 1; }
  snprintf(p, sizeof p, "%s/cli.key", dir); if (wolfSSL_CTX_use_PrivateKey_file(cc, p, SSL_FILETYPE_PEM) != 1) { puts("cli.key"); return 1; }
  wolfSSL_CTX_set_cipher_list(sc, "ECDHE-ECDSA-AES128-GCM-SHA256"); wolfSSL_CTX_set_cipher_list(cc, "ECDHE-ECDSA-AES128-GCM-SHA256");
  wolfSSL_CTX_set_verify(sc, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, accept_any);
  wolfSSL_CTX_set_verify(cc, SSL_VERIFY_NONE, NULL);
  wolfSSL_CTX_SetIORecv(sc, io_recv); wolfSSL_CTX_SetIOSend(sc, io_send); wolfSSL_CTX_SetIORecv(cc, io_recv); wolfSSL_CTX_SetIOSend(cc, io_send);
  wolfSSL_CTX_SetGenCookie(sc, gen_cookie);
  static dq a, b; ends se = {&a, &b}, ce = {&b, &a}; double total = 0; int ok = 0;
  for (int k = 0; k < n; k++) {
    a.n = a.head = b.n = b.head = 0;
    double t0 = tcpu(); WOLFSSL *s = wolfSSL_new(sc); wolfSSL_SetIOReadCtx(s, &se); wolfSSL_SetIOWriteCtx(s, &se);
    wolfSSL_dtls_set_using_nonblock(s, 1); double srv = tcpu() - t0;
    WOLFSSL *c = wolfSSL_new(cc); wolfSSL_SetIOReadCtx(c, &ce); wolfSSL_SetIOWriteCtx(c, &ce); wolfSSL_dtls_set_using_nonblock(c, 1);
    wolfSSL_UseSupportedCurve(c, WOLFSSL_ECC_SECP256R1);
    int sd = 0, cd = 0, steps = 0;
    while ((!sd || !cd) && steps++ < 200) {
      if (!cd) { int r = wolfSSL_connect(c); if (r == 1) cd = 1; else { int e = wolfSSL_get_error(c, r); if (e != WOLFSSL_ERROR_WANT_READ && e != WOLFSSL_ERROR_WANT_WRITE) { printf("client err %d\n", e); return 1; } } }
      if (!sd) { double t1 = tcpu(); int r = wolfSSL_accept(s); srv += tcpu() - t1; if (r == 1) sd = 1; else { int e = wolfSSL_get_error(s, r); if (e != WOLFSSL_ERROR_WANT_READ && e != WOLFSSL_ERROR_WANT_WRITE) { printf("server err %d\n", e); return 1; } } }
    }
    double t2 = tcpu(); wolfSSL_free(s); srv += tcpu() - t2; wolfSSL_free(c);
    if (sd && cd) { ok++; total += srv; }
  }
  printf("wolfSSL %s: handshakes %d/%d (cookie exchange): server %.1f us/handshake\n", wolfSSL_lib_version(), ok, n, ok ? total / ok : 0);
  return 0;
}
