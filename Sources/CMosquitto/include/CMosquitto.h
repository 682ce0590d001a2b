#include <mosquitto.h>
#include <sys/eventfd.h>  // MosquittoConnection wakes its poll(2) with one

/// Loads libmosquitto (and with it OpenSSL) into the process, once; every mosquitto and OpenSSL function
/// this module calls goes through it (loader.c). Returns 0, or -1 with dlopen's reason in `error`.
///
/// Not linked at start: libcrypto's relocated tables alone are 1.2 MiB the dynamic loader writes into
/// every process that links it, resident for good; a gateway whose vendors have no broker never pays it.
int iotgw_mosquitto_load(char *error, size_t size);

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

// Declared by <unistd.h> only under _GNU_SOURCE, which this header must not define (the system headers
// it includes are shared with the Swift overlay's modules, which are built without it).
extern int dup3(int oldfd, int newfd, int flags);

// A bound on what a broker can make this client read for one MQTT packet.
//
// libmosquitto 2.0's client allocates whatever remaining length a packet announces (up to MQTT's
// 256 MiB) and reads it all before any callback can look at it: its packet reader has no client-side
// limit. A broker the client does not control (a vendor's, on the owner's gateway) could make it hold
// 256 MiB per message, again and again. Every TLS record the client reads passes `iotgw_meter_record`
// (OpenSSL's message callback sees each record header before the record's body is read): once the
// records read since the last whole MQTT packet exceed `limit` bytes, the socket is replaced by
// /dev/null under libmosquitto, so the next read ends the connection (and the TCP socket, with its
// unread bytes, is closed at once). libmosquitto logs every packet it has read whole ("Client ID
// received ..."); the client's log callback calls `iotgw_meter_packet_done` on those lines.
typedef struct iotgw_rx_meter {
    /// TLS record bytes read since the last whole packet (or since the connection began).
    atomic_llong pending;
    long long limit;
    /// Set when the limit was passed (and the socket taken away); read by `iotgw_meter_trip`.
    atomic_int tripped;
    /// `pending` when it tripped.
    atomic_llong trippedAt;
} iotgw_rx_meter;

static inline void iotgw_meter_record(int write_p, int version, int content_type, const void *buf, size_t len,
                                      SSL *ssl, void *arg) {
    (void)version;
    iotgw_rx_meter *meter = (iotgw_rx_meter *)arg;
    if (write_p || content_type != SSL3_RT_HEADER || len < 5 || meter == NULL) return;
    const unsigned char *header = (const unsigned char *)buf;
    long long length = ((long long)header[3] << 8) | header[4];
    long long pending = atomic_fetch_add(&meter->pending, length) + length;
    if (pending <= meter->limit || atomic_exchange(&meter->tripped, 1)) return;
    atomic_store(&meter->trippedAt, pending);
    int fd = SSL_get_fd(ssl);
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd >= 0 && devnull >= 0 && dup3(devnull, fd, O_CLOEXEC) >= 0) {
        close(devnull);
        return;
    }
    if (devnull >= 0) close(devnull);
    if (fd >= 0) shutdown(fd, SHUT_RDWR);
}

/// A client TLS context whose records are counted against `meter` (one reference, the caller's):
/// TLS 1.3 only, the broker's certificate checked against the system's verification (no callback).
///
/// libmosquitto 2.0.11 must be told to leave the context as it is (MOSQ_OPT_SSL_CTX_WITH_DEFAULTS 0):
/// with its own settings applied to a context it did not make, its certificate callback looks its
/// connection up under an ex_data index it only allocates when it makes a context of its own, finds
/// nothing, and fails every handshake (unless another client of the process had made one first). So
/// the context is set up here, in full, by `iotgw_tls_load` before every connection attempt.
static inline SSL_CTX *iotgw_metered_tls_context(iotgw_rx_meter *meter) {
    SSL_CTX *context = SSL_CTX_new(TLS_client_method());
    if (context == NULL) return NULL;
    SSL_CTX_set_min_proto_version(context, TLS1_3_VERSION);
    SSL_CTX_set_verify(context, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_msg_callback(context, iotgw_meter_record);
    SSL_CTX_set_msg_callback_arg(context, meter);
    return context;
}

/// (Re)loads the CA, the client's certificate chain and key (files that may have been renewed since
/// the last attempt, as libmosquitto reloads them itself) and the name the broker's certificate must
/// carry: an IP address or a DNS name (its subject alternative names; the CN when it has none).
/// Returns 0, or the step that failed (1 CA, 2 certificate, 3 key, 4 key and certificate do not match,
/// 5 host name); OpenSSL's error queue says why.
static inline int iotgw_tls_load(SSL_CTX *context, const char *caFile, const char *certificateFile, const char *keyFile,
                                 const char *host) {
    if (SSL_CTX_load_verify_locations(context, caFile, NULL) != 1) return 1;
    if (certificateFile != NULL) {
        if (SSL_CTX_use_certificate_chain_file(context, certificateFile) != 1) return 2;
        if (SSL_CTX_use_PrivateKey_file(context, keyFile, SSL_FILETYPE_PEM) != 1) return 3;
        if (SSL_CTX_check_private_key(context) != 1) return 4;
    }
    X509_VERIFY_PARAM *param = SSL_CTX_get0_param(context);
    if (X509_VERIFY_PARAM_set1_ip_asc(param, host) == 1) return 0;
    ERR_clear_error();  // not an IP address: a name
    return X509_VERIFY_PARAM_set1_host(param, host, 0) == 1 ? 0 : 5;
}

/// OpenSSL's queued errors, oldest first, "; "-separated, into `buffer` (emptied from the queue).
static inline void iotgw_tls_errors(char *buffer, size_t size) {
    size_t used = 0;
    unsigned long code;
    if (size > 0) buffer[0] = 0;
    while ((code = ERR_get_error()) != 0) {
        if (used + 3 >= size) continue;
        if (used > 0) { buffer[used++] = ';'; buffer[used++] = ' '; buffer[used] = 0; }
        ERR_error_string_n(code, buffer + used, size - used);
        used += strlen(buffer + used);
    }
}

static inline iotgw_rx_meter *iotgw_meter_new(long long limit) {
    iotgw_rx_meter *meter = (iotgw_rx_meter *)calloc(1, sizeof(iotgw_rx_meter));
    if (meter != NULL) meter->limit = limit;
    return meter;
}

static inline void iotgw_meter_packet_done(iotgw_rx_meter *meter) { atomic_store(&meter->pending, 0); }

/// A new connection: nothing read yet, nothing tripped.
static inline void iotgw_meter_reset(iotgw_rx_meter *meter) {
    atomic_store(&meter->pending, 0);
    atomic_store(&meter->tripped, 0);
    atomic_store(&meter->trippedAt, 0);
}

/// The bytes read when the limit tripped in this connection, or 0 when it did not.
static inline long long iotgw_meter_trip(iotgw_rx_meter *meter) {
    return atomic_load(&meter->tripped) ? atomic_load(&meter->trippedAt) : 0;
}
