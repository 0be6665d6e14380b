/*
 * http.h: the HTTP/1.1 the server needs, as pure functions over bytes (no sockets: loop.c owns those, and
 * tests/c/server_test.c calls these directly). One request per connection (every response says
 * Connection: close), no chunked request bodies.
 *
 *     size_t head_len = http_head_end(buf, n, 0);        // 0 until the blank line after the headers arrived
 *     HttpRequest req;
 *     int status = http_parse_head(buf, head_len, MAX_BODY, &req, msg, sizeof msg);  // 0, or 400/411/413/...
 *     ... once n >= head_len + req.content_length: req's body is buf + head_len
 *     int len = http_response_head(out, sizeof out, 200, "application/json", "", body_len);
 */
#ifndef HTTP_H
#define HTTP_H

#include <stddef.h>

#define HTTP_MAX_HEADER 8192   // request line and headers together, bytes
#define HTTP_MAX_PATH 1024
#define HTTP_MAX_AUTH 512      // bytes of the Authorization header kept (a longer one cannot match a key)

typedef struct {
    char method[16];
    char path[HTTP_MAX_PATH];         // the target without its query string
    char authorization[HTTP_MAX_AUTH]; // the Authorization header's value, "" without one
    int authorization_too_long;
    size_t content_length;            // 0 without a body
    int expect_continue;              // the client waits for "100 Continue" before sending its body
} HttpRequest;

/* The length of the request line and headers with their blank line, once buf[0..n) holds it; 0 before. from: where
   the previous call stopped looking (its n), so that a header arriving byte by byte is scanned once. */
size_t http_head_end(const char *buf, size_t n, size_t from);
/* Parses the request line and headers buf[0..head_len) (head_len from http_head_end). 0 on success, else the HTTP
   status of the problem (400, 411, 413, 414, 417) with one line in msg. */
int http_parse_head(const char *buf, size_t head_len, size_t max_body, HttpRequest *req, char *msg, size_t msg_size);
/* A response's status line and headers into out[0..size): Content-Length when content_length >= 0 (else the body
   ends with the connection, as a stream does), Connection: close. extra_headers: "" or lines ending in \r\n. The
   length written, or -1 when it does not fit. */
int http_response_head(char *out, size_t size, int status, const char *content_type, const char *extra_headers,
                       long long content_length);
const char *http_reason(int status);

#endif
