/* Preloaded into a function's binary by tests/tests/runtime.rs: appends the name of every
 * FLOODGATE_* or RUST_LOG variable the process looks up (Rust's std::env::var calls getenv)
 * to the file named by FG_GETENV_LOG, so the test knows what the code reads. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

typedef char *(*getenv_fn)(const char *);

char *getenv(const char *name) {
    static getenv_fn real = 0;
    if (!real) real = (getenv_fn)dlsym(RTLD_NEXT, "getenv");
    char *value = real(name);
    if (name && (strncmp(name, "FLOODGATE_", 10) == 0 || strcmp(name, "RUST_LOG") == 0)) {
        const char *path = real("FG_GETENV_LOG");
        if (path) {
            FILE *f = fopen(path, "a");
            if (f) {
                fprintf(f, "%s\n", name);
                fclose(f);
            }
        }
    }
    return value;
}
