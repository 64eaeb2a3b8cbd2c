// File: common/memory.h
//
// Hands freed memory back to the OS. Allocators keep freed pages for reuse: after a request of
// many megabytes (a 30 MB prompt) the process would otherwise keep that much resident for good.
// Works with tcmalloc (the kvroute binary's allocator, docs/adr/0006) and with glibc malloc.
#pragma once

namespace kvroute {

// Returns at once: the release (madvise over every free page: tens of milliseconds after a large
// request) runs on a background thread, made on first use; calls while one runs are merged.
// Thread-safe.
void release_free_memory();

}  // namespace kvroute
