// libmosquitto and the OpenSSL functions the module calls, loaded on first use with dlopen(3) instead of
// linked: each function below has the prototype its header declares (the compiler checks it against
// that declaration) and calls the library's own, looked up once in libmosquitto's scope (libmosquitto
// and its libssl and libcrypto), never in the process's global one. The executable exports none of these
// names (--no-export-dynamic), so the libraries' own calls bind to their own functions.
#include "CMosquitto.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *library;
static char failure[256];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void load(void) {
    library = dlopen("libmosquitto.so.1", RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) snprintf(failure, sizeof failure, "%s", dlerror());
}

int iotgw_mosquitto_load(char *error, size_t size) {
    pthread_once(&once, load);
    if (library != NULL) return 0;
    if (size > 0) snprintf(error, size, "%s", failure);
    return -1;
}

static void *resolve(const char *name) {
    char error[256];
    if (iotgw_mosquitto_load(error, sizeof error) != 0) {
        // The Swift side loads before it calls anything: this is a programming error.
        fprintf(stderr, "libmosquitto not loaded (%s) before %s was called\n", error, name);
        abort();
    }
    void *symbol = dlsym(library, name);
    if (symbol == NULL) {
        fprintf(stderr, "libmosquitto.so.1 or its OpenSSL lacks %s\n", name);
        abort();
    }
    return symbol;
}

// One function: `ret name params` calling the library's `name` with `args` (pointers are written once
// per process, with the same value by any thread that races, so a relaxed atomic is enough).
#define LAZY(ret, name, params, args)                                                         \
    ret name params {                                                                         \
        static _Atomic(ret (*) params) real;                                                 \
        ret (*f) params = atomic_load_explicit(&real, memory_order_relaxed);                  \
        if (f == NULL) {                                                                      \
            f = (ret (*) params)resolve(#name);                                               \
            atomic_store_explicit(&real, f, memory_order_relaxed);                            \
        }                                                                                     \
        return f args;                                                                        \
    }

typedef struct mosquitto M;
LAZY(const char *, mosquitto_connack_string, (int connack_code), (connack_code))
LAZY(int, mosquitto_connect_async, (M *mosq, const char *host, int port, int keepalive), (mosq, host, port, keepalive))
LAZY(void, mosquitto_connect_with_flags_callback_set, (M *mosq, void (*on_connect)(M *, void *, int, int)), (mosq, on_connect))
LAZY(void, mosquitto_destroy, (M *mosq), (mosq))
LAZY(int, mosquitto_disconnect, (M *mosq), (mosq))
LAZY(void, mosquitto_disconnect_callback_set, (M *mosq, void (*on_disconnect)(M *, void *, int)), (mosq, on_disconnect))
LAZY(int, mosquitto_int_option, (M *mosq, enum mosq_opt_t option, int value), (mosq, option, value))
LAZY(int, mosquitto_lib_init, (void), ())
LAZY(void, mosquitto_log_callback_set, (M *mosq, void (*on_log)(M *, void *, int, const char *)), (mosq, on_log))
LAZY(int, mosquitto_loop_misc, (M *mosq), (mosq))
LAZY(int, mosquitto_loop_read, (M *mosq, int max_packets), (mosq, max_packets))
LAZY(int, mosquitto_loop_write, (M *mosq, int max_packets), (mosq, max_packets))
LAZY(void, mosquitto_message_callback_set, (M *mosq, void (*on_message)(M *, void *, const struct mosquitto_message *)), (mosq, on_message))
LAZY(M *, mosquitto_new, (const char *id, bool clean_session, void *obj), (id, clean_session, obj))
LAZY(int, mosquitto_pub_topic_check, (const char *topic), (topic))
LAZY(int, mosquitto_publish, (M *mosq, int *mid, const char *topic, int payloadlen, const void *payload, int qos, bool retain),
     (mosq, mid, topic, payloadlen, payload, qos, retain))
LAZY(void, mosquitto_publish_callback_set, (M *mosq, void (*on_publish)(M *, void *, int)), (mosq, on_publish))
LAZY(int, mosquitto_socket, (M *mosq), (mosq))
LAZY(const char *, mosquitto_strerror, (int mosq_errno), (mosq_errno))
LAZY(int, mosquitto_sub_topic_check, (const char *topic), (topic))
LAZY(int, mosquitto_subscribe, (M *mosq, int *mid, const char *sub, int qos), (mosq, mid, sub, qos))
LAZY(void, mosquitto_subscribe_callback_set, (M *mosq, void (*on_subscribe)(M *, void *, int, int, const int *)), (mosq, on_subscribe))
LAZY(int, mosquitto_threaded_set, (M *mosq, bool threaded), (mosq, threaded))
LAZY(int, mosquitto_tls_insecure_set, (M *mosq, bool value), (mosq, value))
LAZY(int, mosquitto_tls_opts_set, (M *mosq, int cert_reqs, const char *tls_version, const char *ciphers), (mosq, cert_reqs, tls_version, ciphers))
LAZY(int, mosquitto_tls_set,
     (M *mosq, const char *cafile, const char *capath, const char *certfile, const char *keyfile,
      int (*pw_callback)(char *buf, int size, int rwflag, void *userdata)),
     (mosq, cafile, capath, certfile, keyfile, pw_callback))
LAZY(int, mosquitto_unsubscribe, (M *mosq, int *mid, const char *sub), (mosq, mid, sub))
LAZY(void, mosquitto_user_data_set, (M *mosq, void *obj), (mosq, obj))
LAZY(int, mosquitto_username_pw_set, (M *mosq, const char *username, const char *password), (mosq, username, password))
LAZY(int, mosquitto_validate_utf8, (const char *str, int len), (str, len))
LAZY(int, mosquitto_void_option, (M *mosq, enum mosq_opt_t option, void *value), (mosq, option, value))
LAZY(bool, mosquitto_want_write, (M *mosq), (mosq))
LAZY(int, mosquitto_will_set, (M *mosq, const char *topic, int payloadlen, const void *payload, int qos, bool retain),
     (mosq, topic, payloadlen, payload, qos, retain))

LAZY(void, ERR_clear_error, (void), ())
LAZY(void, ERR_error_string_n, (unsigned long e, char *buf, size_t len), (e, buf, len))
LAZY(unsigned long, ERR_get_error, (void), ())
LAZY(int, SSL_CTX_check_private_key, (const SSL_CTX *ctx), (ctx))
LAZY(long, SSL_CTX_ctrl, (SSL_CTX *ctx, int cmd, long larg, void *parg), (ctx, cmd, larg, parg))
LAZY(void, SSL_CTX_free, (SSL_CTX *ctx), (ctx))
LAZY(X509_VERIFY_PARAM *, SSL_CTX_get0_param, (SSL_CTX *ctx), (ctx))
LAZY(int, SSL_CTX_load_verify_locations, (SSL_CTX *ctx, const char *CAfile, const char *CApath), (ctx, CAfile, CApath))
LAZY(SSL_CTX *, SSL_CTX_new, (const SSL_METHOD *meth), (meth))
LAZY(void, SSL_CTX_set_msg_callback,
     (SSL_CTX *ctx, void (*cb)(int write_p, int version, int content_type, const void *buf, size_t len, SSL *ssl, void *arg)),
     (ctx, cb))
LAZY(void, SSL_CTX_set_verify, (SSL_CTX *ctx, int mode, SSL_verify_cb callback), (ctx, mode, callback))
LAZY(int, SSL_CTX_use_PrivateKey_file, (SSL_CTX *ctx, const char *file, int type), (ctx, file, type))
LAZY(int, SSL_CTX_use_certificate_chain_file, (SSL_CTX *ctx, const char *file), (ctx, file))
LAZY(int, SSL_get_fd, (const SSL *s), (s))
LAZY(const SSL_METHOD *, TLS_client_method, (void), ())
LAZY(int, X509_VERIFY_PARAM_set1_host, (X509_VERIFY_PARAM *param, const char *name, size_t namelen), (param, name, namelen))
LAZY(int, X509_VERIFY_PARAM_set1_ip_asc, (X509_VERIFY_PARAM *param, const char *ipasc), (param, ipasc))
