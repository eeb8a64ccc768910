/* Atomic files and UTF-8 checks (see io.h). */
#include "io.h"

#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

int file_tmp_name(char *buf, size_t size, const char *path, McmErr *err) {
  int n = snprintf(buf, size, "%s.tmp.%d.%d", path, (int)getpid(), (int)gettid());
  if (n < 0 || (size_t)n >= size) return mcm_err(err, "cannot write '%s': path too long", path);
  return 0;
}

static int fsync_path(const char *path, bool dir) {
  int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  /* Some filesystems cannot fsync a directory; the rename is then as durable as they allow. */
  if (rc < 0 && dir && (errno == EINVAL || errno == ENOTSUP)) rc = 0;
  int e = errno;
  close(fd);
  errno = e;
  return rc;
}

int file_publish(const char *tmp, const char *path, McmErr *err) {
  if (fsync_path(tmp, false) < 0) {
    int rc = mcm_err(err, "cannot write '%s': fsync of %s: %s (hint: is the disk full?)", path, tmp, strerror(errno));
    unlink(tmp);
    return rc;
  }
  if (rename(tmp, path) < 0) {
    int rc = mcm_err(err, "cannot write '%s': renaming %s over it: %s", path, tmp, strerror(errno));
    unlink(tmp);
    return rc;
  }
  char dir[PATH_MAX];
  mcm_snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (!slash) mcm_snprintf(dir, sizeof dir, ".");
  else if (slash == dir) slash[1] = 0;
  else *slash = 0;
  if (fsync_path(dir, true) < 0)
    return mcm_err(err, "'%s' was written, but fsync of its directory %s failed: %s (a crash now may lose it)", path,
                   dir, strerror(errno));
  return 0;
}

int file_write_atomic(const char *path, const void *data, size_t n, McmErr *err) {
  char tmp[PATH_MAX];
  if (file_tmp_name(tmp, sizeof tmp, path, err)) return -1;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) return mcm_err(err, "cannot write '%s': %s", path, strerror(errno));
  const char *p = data;
  size_t left = n;
  while (left > 0) {
    ssize_t w = write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int rc = mcm_err(err, "cannot write '%s': %s (hint: is the disk full?)", path, w < 0 ? strerror(errno) : "short write");
      close(fd);
      unlink(tmp);
      return rc;
    }
    p += w, left -= (size_t)w;
  }
  if (close(fd) != 0) {
    int rc = mcm_err(err, "cannot write '%s': close: %s", path, strerror(errno));
    unlink(tmp);
    return rc;
  }
  return file_publish(tmp, path, err);
}

bool utf8_valid(const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    int len;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    else return false; /* continuation byte first, overlong lead C0/C1, or F5..FF */
    if (i + (size_t)len > n) return false;
    for (int k = 1; k < len; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return false; /* overlong */
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;                          /* surrogate */
    if (cp > 0x10FFFF) return false;
    i += (size_t)len;
  }
  return true;
}
