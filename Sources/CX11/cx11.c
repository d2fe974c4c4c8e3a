#define _GNU_SOURCE
#include "CX11.h"
#include <pthread.h>
#include <string.h>

// Xlib calls error handlers on the thread that reads the reply: each connection lives on its
// own thread, so thread-local slots attribute errors to the right connection.
static _Thread_local int last_error;
static _Thread_local unsigned char last_request;
static _Thread_local unsigned long last_resource;
static _Thread_local int io_failed;

static int on_error(Display *dpy, XErrorEvent *event) {
    (void)dpy;
    if (last_error == 0) {
        last_error = event->error_code;
        last_request = event->request_code;
        last_resource = event->resourceid;
    }
    return 0;
}

static int on_io_error(Display *dpy) {
    (void)dpy;
    io_failed = 1;
    return 0;
}

// Returning from the exit handler leaves the connection marked dead (libX11 >= 1.7): later
// calls on it do nothing, and the owner closes it.
static void on_io_exit(Display *dpy, void *data) {
    (void)dpy;
    (void)data;
    io_failed = 1;
}

static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;

static void install(void) {
    XSetErrorHandler(on_error);
    XSetIOErrorHandler(on_io_error);
}

void kx_install_handlers(void) { pthread_once(&handlers_once, install); }

Display *kx_open(const char *name, const unsigned char *cookie, int cookie_length) {
    static char auth_name[] = "MIT-MAGIC-COOKIE-1";
    kx_install_handlers();
    io_failed = 0;
    pthread_mutex_lock(&open_lock);
    XSetAuthorization(auth_name, (int)strlen(auth_name), (char *)cookie, cookie_length);
    Display *dpy = XOpenDisplay(name);
    XSetAuthorization(NULL, 0, NULL, 0);
    pthread_mutex_unlock(&open_lock);
    if (dpy != NULL) XSetIOErrorExitHandler(dpy, on_io_exit, NULL);
    return dpy;
}

int kx_take_error(unsigned char *request_code, unsigned long *resource) {
    int code = last_error;
    if (request_code) *request_code = last_request;
    if (resource) *resource = last_resource;
    last_error = 0;
    return code;
}

int kx_io_failed(void) { return io_failed; }

