/*
 * xrt_shim.h: a C ABI over XRT's C++ API (device, xclbin, hw_context,
 * kernel, buffer objects, runs).
 *
 * Conventions
 * - Every function that can fail returns an int status: XRT_SHIM_OK (0) on
 *   success, one of the nonzero XRT_SHIM_ERR_* codes otherwise. Objects are
 *   returned through out-parameters, which are left untouched on failure.
 * - After a failure, xrt_shim_last_error() returns the message (for
 *   XRT_SHIM_ERR_XRT: the text of the exception XRT threw). The pointer stays
 *   valid until the next call into the shim on the same thread.
 * - No C++ exception ever crosses this ABI.
 * - Handles are owned by the caller and freed with the matching *_free
 *   function; *_free accepts NULL. XRT objects are reference counted, so
 *   freeing a handle never invalidates another handle made from it.
 */
#ifndef XRT_SHIM_H
#define XRT_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
#define XRT_SHIM_OK 0
/* XRT threw; the message is XRT's own. */
#define XRT_SHIM_ERR_XRT 1
/* The caller passed something unusable (null handle, size 0, range outside
 * a buffer, not an xclbin); nothing was handed to XRT. */
#define XRT_SHIM_ERR_INVALID 2
/* The XRT this shim was compiled against lacks the feature. */
#define XRT_SHIM_ERR_UNSUPPORTED 3
/* Reading a file failed. */
#define XRT_SHIM_ERR_IO 4

/* Buffer object flags (equal to XRT's XRT_BO_FLAGS_* / XCL_BO_FLAGS_*). */
#define XRT_SHIM_BO_FLAGS_NONE 0u
#define XRT_SHIM_BO_FLAGS_CACHEABLE (1u << 24)
#define XRT_SHIM_BO_FLAGS_HOST_ONLY (1u << 29)

/* Sync directions (equal to XRT's XCL_BO_SYNC_BO_*). */
#define XRT_SHIM_SYNC_TO_DEVICE 0
#define XRT_SHIM_SYNC_FROM_DEVICE 1

/* Command states returned by xrt_shim_run_wait / xrt_shim_run_state
 * (equal to XRT's enum ert_cmd_state). */
#define XRT_SHIM_CMD_STATE_NEW 1
#define XRT_SHIM_CMD_STATE_QUEUED 2
#define XRT_SHIM_CMD_STATE_RUNNING 3
#define XRT_SHIM_CMD_STATE_COMPLETED 4
#define XRT_SHIM_CMD_STATE_ERROR 5
#define XRT_SHIM_CMD_STATE_ABORT 6
#define XRT_SHIM_CMD_STATE_SUBMITTED 7
#define XRT_SHIM_CMD_STATE_TIMEOUT 8
#define XRT_SHIM_CMD_STATE_NORESPONSE 9
#define XRT_SHIM_CMD_STATE_SKERROR 10
#define XRT_SHIM_CMD_STATE_SKCRASHED 11

/* Most data buffers xrt_shim_kernel_start_npu accepts. */
#define XRT_SHIM_MAX_DATA_BOS 5

typedef struct xrt_shim_device xrt_shim_device;
typedef struct xrt_shim_xclbin xrt_shim_xclbin;
typedef struct xrt_shim_hw_context xrt_shim_hw_context;
typedef struct xrt_shim_kernel xrt_shim_kernel;
typedef struct xrt_shim_bo xrt_shim_bo;
typedef struct xrt_shim_run xrt_shim_run;

/* Errors and build facts. */
const char* xrt_shim_last_error(void);
/* The XRT version string the shim was compiled against (static storage). */
const char* xrt_shim_xrt_version(void);
/* 1 if compiled against an XRT with xrt::hw_context, else 0. */
int xrt_shim_has_hw_context(void);
/* XRT_SHIM_OK if hw_context is available, else XRT_SHIM_ERR_UNSUPPORTED with
 * the reason in xrt_shim_last_error(). */
int xrt_shim_require_hw_context(void);

/* Device. */
int xrt_shim_device_open(unsigned int index, xrt_shim_device** out);
void xrt_shim_device_free(xrt_shim_device* device);
/* Copies the device name into buf (at most cap bytes, no terminating NUL
 * added) and stores its full length in *len; call again with a larger buffer
 * when *len > cap. buf may be NULL when cap is 0. */
int xrt_shim_device_name(const xrt_shim_device* device, char* buf, size_t cap,
                         size_t* len);
/* Needs hw_context support; XRT_SHIM_ERR_UNSUPPORTED otherwise (checked
 * before the arguments). */
int xrt_shim_device_register_xclbin(const xrt_shim_device* device,
                                    const xrt_shim_xclbin* xclbin);

/* Xclbin. The container framing (magic, header, section table bounds) is
 * checked before XRT parses it. */
int xrt_shim_xclbin_load_file(const char* path, xrt_shim_xclbin** out);
int xrt_shim_xclbin_load_bytes(const void* data, size_t len,
                               xrt_shim_xclbin** out);
void xrt_shim_xclbin_free(xrt_shim_xclbin* xclbin);
int xrt_shim_xclbin_kernel_count(const xrt_shim_xclbin* xclbin, size_t* out);
/* *out points into the xclbin handle and lives as long as it. */
int xrt_shim_xclbin_kernel_name(const xrt_shim_xclbin* xclbin, size_t index,
                                const char** out);
int xrt_shim_xclbin_uuid(const xrt_shim_xclbin* xclbin, uint8_t out[16]);

/* Hardware context: registers nothing by itself; call
 * xrt_shim_device_register_xclbin first. Needs hw_context support
 * (checked before the arguments). */
int xrt_shim_hw_context_create(const xrt_shim_device* device,
                               const xrt_shim_xclbin* xclbin,
                               xrt_shim_hw_context** out);
void xrt_shim_hw_context_free(xrt_shim_hw_context* context);

/* Kernel. xrt_shim_kernel_open needs hw_context support (checked before the
 * arguments). */
int xrt_shim_kernel_open(const xrt_shim_hw_context* context, const char* name,
                         xrt_shim_kernel** out);
void xrt_shim_kernel_free(xrt_shim_kernel* kernel);
int xrt_shim_kernel_group_id(const xrt_shim_kernel* kernel, int arg_index,
                             int* out);

/* Buffer objects. size must be nonzero. */
int xrt_shim_bo_alloc(const xrt_shim_device* device, size_t size,
                      uint32_t flags, uint32_t group, xrt_shim_bo** out);
/* A sub-buffer: [offset, offset + size) of parent, sharing its memory (size
 * nonzero, the range inside the parent). It keeps the parent's memory alive. */
int xrt_shim_bo_sub(const xrt_shim_bo* parent, size_t size, size_t offset,
                    xrt_shim_bo** out);
void xrt_shim_bo_free(xrt_shim_bo* bo);
int xrt_shim_bo_size(const xrt_shim_bo* bo, size_t* out);
/* [offset, offset + len) must lie inside the buffer. */
int xrt_shim_bo_write(xrt_shim_bo* bo, const void* src, size_t len,
                      size_t offset);
int xrt_shim_bo_read(const xrt_shim_bo* bo, void* dst, size_t len,
                     size_t offset);
/* Host address of the buffer, valid while the handle lives. */
int xrt_shim_bo_map(xrt_shim_bo* bo, void** out);
int xrt_shim_bo_sync(xrt_shim_bo* bo, int direction, size_t len,
                     size_t offset);

/* Runs. Starts the kernel as the NPU host flow does:
 * kernel(opcode, instr, instr_count, data[0], ..., data[n_data - 1]),
 * with 1 <= n_data <= XRT_SHIM_MAX_DATA_BOS. */
int xrt_shim_kernel_start_npu(const xrt_shim_kernel* kernel, uint64_t opcode,
                              const xrt_shim_bo* instructions,
                              uint32_t instruction_count,
                              const xrt_shim_bo* const* data, size_t n_data,
                              xrt_shim_run** out);
/* Waits up to timeout_ms (0: no limit) and stores the command state. */
int xrt_shim_run_wait(const xrt_shim_run* run, uint64_t timeout_ms,
                      int* state);
int xrt_shim_run_state(const xrt_shim_run* run, int* state);
/* Aborts a started run (run.abort(): synchronous, it waits for the abort to
 * complete) and stores the state the command ended in. XRT leaves this to the
 * caller when a wait returns ERT_CMD_STATE_TIMEOUT. */
int xrt_shim_run_abort(xrt_shim_run* run, int* state);
void xrt_shim_run_free(xrt_shim_run* run);

#ifdef __cplusplus
}
#endif

#endif /* XRT_SHIM_H */
