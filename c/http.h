/*
 * http.h: the HTTP/1.1 the server needs, over a blocking socket: read one request within a size limit
 * and a deadline, write one response, notice a client that went away. One request per connection
 * (every response says Connection: close), no chunked request bodies.
 *
 *     HttpRequest req;
 *     int status = http_read_request(fd, &req, 1 << 20, 10000, msg, sizeof msg);  // 0, or 400/408/...
 *     http_send(fd, 200, "application/json", body, len);
 *     http_request_free(&req);
 */
#ifndef HTTP_H
#define HTTP_H

#include <stddef.h>

#define HTTP_MAX_HEADER 8192   // request line and headers together, bytes
#define HTTP_MAX_PATH 1024

typedef struct {
    char method[16];
    char path[HTTP_MAX_PATH];  // the target without its query string
    char *body;                // content_length bytes, NUL-terminated (NULL without a body)
    size_t body_len;
} HttpRequest;

/* Reads one request from fd. total_timeout_ms bounds the whole read (a slow client cannot hold the
   connection longer). 0 on success, else the HTTP status of the problem (400, 408, 411, 413, 414, 431,
   or -1 when the peer closed or failed before sending anything) with one line in msg. */
int http_read_request(int fd, HttpRequest *req, size_t max_body, int total_timeout_ms, char *msg, size_t msg_size);
void http_request_free(HttpRequest *req);

/* All n bytes, or -1 when the peer is gone or the socket's send timeout passed. Never raises SIGPIPE. */
int http_send_all(int fd, const void *data, size_t n);
/* A complete response with Content-Length and Connection: close. extra_headers: "" or lines ending in \r\n. */
int http_send(int fd, int status, const char *content_type, const char *extra_headers, const char *body, size_t len);
const char *http_reason(int status);
/* 1 when the peer closed or reset the connection (checked without blocking), else 0. */
int http_peer_closed(int fd);
/* Ends the connection politely: stop sending, read and drop what the client still sends (at most
   max_bytes, at most timeout_ms) so that closing does not reset the response it has not read yet. */
void http_close(int fd, size_t max_bytes, int timeout_ms);

#endif
