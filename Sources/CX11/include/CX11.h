#ifndef KIOSKD_CX11_H
#define KIOSKD_CX11_H

#include <X11/Xlib.h>
#include <X11/Xutil.h>
#include <X11/Xatom.h>
#include <X11/keysym.h>
#include <X11/XKBlib.h>
#include <X11/extensions/XTest.h>
#include <sys/eventfd.h>

/// Installs, once per process, Xlib error handlers that never exit: an X error is kept for the
/// thread that caused it (kx_take_error), a broken connection marks that thread's connection
/// failed (kx_io_failed) instead of ending the daemon.
void kx_install_handlers(void);

/// Opens `name` with the given MIT-MAGIC-COOKIE-1 rather than $XAUTHORITY, so each session's
/// connection uses its own cookie. Serialized: XSetAuthorization is process-wide state.
/// A broken connection afterwards no longer exits the process (XSetIOErrorExitHandler).
Display *kx_open(const char *name, const unsigned char *cookie, int cookie_length);

/// The first X error reported on this thread since the last call; 0 when there was none.
int kx_take_error(unsigned char *request_code, unsigned long *resource);

/// Whether this thread's connection broke (the X server went away).
int kx_io_failed(void);


#endif
