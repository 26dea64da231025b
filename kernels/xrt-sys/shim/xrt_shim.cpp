// xrt_shim.cpp: implementation of the C ABI declared in xrt_shim.h.
//
// Build-time macros (set by build.rs):
//   XRT_SHIM_VERSION_HEADER           quoted path of XRT's version.h
//   XRT_SHIM_HAS_HW_CONTEXT           defined when XRT provides xrt::hw_context
//   XRT_SHIM_HW_CONTEXT_EXPERIMENTAL  defined when that header lives under
//                                     experimental/ instead of xrt/

#include "xrt_shim.h"

#include <xrt/xrt_bo.h>
#include <xrt/xrt_device.h>
#include <xrt/xrt_kernel.h>

#if defined(XRT_SHIM_HAS_HW_CONTEXT)
#if defined(XRT_SHIM_HW_CONTEXT_EXPERIMENTAL)
#include <experimental/xrt_hw_context.h>
#else
#include <xrt/xrt_hw_context.h>
#endif
#endif

#if defined(XRT_SHIM_VERSION_HEADER)
#include XRT_SHIM_VERSION_HEADER
#define XRT_SHIM_BUILD_VERSION xrt_build_version
#else
#define XRT_SHIM_BUILD_VERSION "unknown"
#endif

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <utility>
#include <vector>

// The shim's public constants must equal XRT's.
static_assert(XRT_SHIM_BO_FLAGS_NONE == XCL_BO_FLAGS_NONE, "flag mismatch");
static_assert(XRT_SHIM_BO_FLAGS_CACHEABLE == XCL_BO_FLAGS_CACHEABLE, "flag mismatch");
static_assert(XRT_SHIM_BO_FLAGS_CACHEABLE == XRT_BO_FLAGS_CACHEABLE, "flag mismatch");
static_assert(XRT_SHIM_BO_FLAGS_HOST_ONLY == XRT_BO_FLAGS_HOST_ONLY, "flag mismatch");
static_assert(XRT_SHIM_SYNC_TO_DEVICE == XCL_BO_SYNC_BO_TO_DEVICE, "sync mismatch");
static_assert(XRT_SHIM_SYNC_FROM_DEVICE == XCL_BO_SYNC_BO_FROM_DEVICE, "sync mismatch");
static_assert(XRT_SHIM_CMD_STATE_NEW == ERT_CMD_STATE_NEW, "state mismatch");
static_assert(XRT_SHIM_CMD_STATE_QUEUED == ERT_CMD_STATE_QUEUED, "state mismatch");
static_assert(XRT_SHIM_CMD_STATE_RUNNING == ERT_CMD_STATE_RUNNING, "state mismatch");
static_assert(XRT_SHIM_CMD_STATE_COMPLETED == ERT_CMD_STATE_COMPLETED, "state mismatch");
static_assert(XRT_SHIM_CMD_STATE_ERROR == ERT_CMD_STATE_ERROR, "state mismatch");
static_assert(XRT_SHIM_CMD_STATE_ABORT == ERT_CMD_STATE_ABORT, "state mismatch");
static_assert(XRT_SHIM_CMD_STATE_SUBMITTED == ERT_CMD_STATE_SUBMITTED, "state mismatch");
static_assert(XRT_SHIM_CMD_STATE_TIMEOUT == ERT_CMD_STATE_TIMEOUT, "state mismatch");
static_assert(XRT_SHIM_CMD_STATE_NORESPONSE == ERT_CMD_STATE_NORESPONSE, "state mismatch");
static_assert(XRT_SHIM_CMD_STATE_SKERROR == ERT_CMD_STATE_SKERROR, "state mismatch");
static_assert(XRT_SHIM_CMD_STATE_SKCRASHED == ERT_CMD_STATE_SKCRASHED, "state mismatch");

struct xrt_shim_device {
  xrt::device device;
};

struct xrt_shim_xclbin {
  xrt::xclbin xclbin;
  // Filled once at load so that names handed out stay valid with the handle.
  std::vector<std::string> kernel_names;
};

#if defined(XRT_SHIM_HAS_HW_CONTEXT)
struct xrt_shim_hw_context {
  xrt::hw_context context;
};
#else
// Never instantiated: without hw_context support no context can be created.
struct xrt_shim_hw_context {};
#endif

struct xrt_shim_kernel {
  xrt::kernel kernel;
};

struct xrt_shim_bo {
  xrt::bo bo;
  std::size_t size;
};

struct xrt_shim_run {
  xrt::run run;
};

namespace {

thread_local std::string last_error_message;
thread_local bool last_error_lost = false;

void set_error(const char* message) noexcept {
  try {
    last_error_message.assign(message);
    last_error_lost = false;
  } catch (...) {
    last_error_lost = true;
  }
}

int fail(int status, const char* message) noexcept {
  set_error(message);
  return status;
}

int fail(int status, const std::string& message) noexcept {
  return fail(status, message.c_str());
}

// Runs body, turning every exception into XRT_SHIM_ERR_XRT plus its message.
template <typename Body>
int guarded(Body&& body) noexcept {
  try {
    return body();
  } catch (const std::exception& e) {
    set_error(e.what());
    return XRT_SHIM_ERR_XRT;
  } catch (...) {
    set_error("XRT threw an exception that is not a std::exception");
    return XRT_SHIM_ERR_XRT;
  }
}

int null_argument(const char* what) noexcept {
  try {
    return fail(XRT_SHIM_ERR_INVALID, std::string("null ") + what + " passed to the XRT shim");
  } catch (...) {
    set_error("null argument passed to the XRT shim");
    return XRT_SHIM_ERR_INVALID;
  }
}

const char* const build_version = XRT_SHIM_BUILD_VERSION;

#if !defined(XRT_SHIM_HAS_HW_CONTEXT)
int no_hw_context() noexcept {
  try {
    return fail(XRT_SHIM_ERR_UNSUPPORTED,
                std::string("this XRT (") + build_version +
                    ") has no hw_context: the NPU needs XRT >= 2.17 (amdxdna); install it "
                    "(e.g. /opt/xilinx/xrt) and rebuild with XILINX_XRT pointing at it");
  } catch (...) {
    set_error("this XRT has no hw_context: the NPU needs XRT >= 2.17 (amdxdna)");
    return XRT_SHIM_ERR_UNSUPPORTED;
  }
}
#endif

// Byte layout of the xclbin container (struct axlf in XRT's xclbin.h),
// checked against XRT's own definition below.
constexpr std::size_t axlf_magic_size = 8;
constexpr std::size_t axlf_length_offset = 304;
constexpr std::size_t axlf_num_sections_offset = 448;
constexpr std::size_t axlf_sections_offset = 456;
constexpr std::size_t axlf_section_size = 40;
constexpr std::size_t axlf_section_data_offset = 24;
constexpr std::size_t axlf_section_data_size = 32;
constexpr std::uint32_t axlf_max_sections = 0x10000;
static_assert(offsetof(axlf, m_header) + offsetof(axlf_header, m_length) == axlf_length_offset,
              "axlf layout changed");
static_assert(offsetof(axlf, m_header) + offsetof(axlf_header, m_numSections) ==
                  axlf_num_sections_offset,
              "axlf layout changed");
static_assert(offsetof(axlf, m_sections) == axlf_sections_offset, "axlf layout changed");
static_assert(sizeof(axlf_section_header) == axlf_section_size, "axlf layout changed");
static_assert(offsetof(axlf_section_header, m_sectionOffset) == axlf_section_data_offset,
              "axlf layout changed");
static_assert(offsetof(axlf_section_header, m_sectionSize) == axlf_section_data_size,
              "axlf layout changed");

template <typename T>
T read_le(const unsigned char* p) {
  T value;
  std::memcpy(&value, p, sizeof value);
  return value;
}

// Checks what XRT's parser trusts without checking: that the header and
// every section lie inside the buffer. Returns an empty string when the
// framing is sound. Section contents are left to XRT.
std::string xclbin_framing_error(const unsigned char* data, std::size_t len) {
  static const char magic[axlf_magic_size] = {'x', 'c', 'l', 'b', 'i', 'n', '2', '\0'};
  if (len < axlf_magic_size || std::memcmp(data, magic, axlf_magic_size) != 0)
    return "not an xclbin (the file does not start with the \"xclbin2\" magic); pass the "
           ".xclbin produced for this kernel";
  if (len < axlf_sections_offset + axlf_section_size)
    return "truncated xclbin: " + std::to_string(len) + " bytes is shorter than its " +
           std::to_string(axlf_sections_offset + axlf_section_size) +
           "-byte header; rebuild or copy the .xclbin again";
  const auto declared = read_le<std::uint64_t>(data + axlf_length_offset);
  if (declared > len)
    return "truncated xclbin: its header declares " + std::to_string(declared) +
           " bytes but only " + std::to_string(len) + " are present; copy the .xclbin again";
  if (declared < axlf_sections_offset + axlf_section_size)
    return "corrupt xclbin: its header declares a length of " + std::to_string(declared) +
           " bytes, shorter than the header itself";
  const auto sections = read_le<std::uint32_t>(data + axlf_num_sections_offset);
  if (sections == 0 || sections > axlf_max_sections)
    return "corrupt xclbin: its header declares " + std::to_string(sections) + " sections";
  const std::uint64_t table_end =
      axlf_sections_offset + static_cast<std::uint64_t>(sections) * axlf_section_size;
  if (table_end > declared)
    return "corrupt xclbin: its section table (" + std::to_string(sections) +
           " sections) runs past the end of the file";
  for (std::uint32_t i = 0; i < sections; ++i) {
    const unsigned char* section = data + axlf_sections_offset + i * axlf_section_size;
    const auto offset = read_le<std::uint64_t>(section + axlf_section_data_offset);
    const auto size = read_le<std::uint64_t>(section + axlf_section_data_size);
    if (offset > declared || size > declared - offset)
      return "corrupt xclbin: section " + std::to_string(i) + " (offset " +
             std::to_string(offset) + ", size " + std::to_string(size) +
             ") lies outside the file's " + std::to_string(declared) + " bytes";
  }
  return std::string();
}

int load_xclbin(std::vector<char>&& bytes, xrt_shim_xclbin** out) {
  const std::string framing =
      xclbin_framing_error(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  if (!framing.empty()) return fail(XRT_SHIM_ERR_INVALID, framing);
  xrt::xclbin xclbin(bytes);
  std::vector<std::string> names;
  for (const auto& kernel : xclbin.get_kernels()) names.push_back(kernel.get_name());
  *out = new xrt_shim_xclbin{std::move(xclbin), std::move(names)};
  return XRT_SHIM_OK;
}

int check_range(const xrt_shim_bo* bo, std::size_t len, std::size_t offset) {
  if (offset > bo->size || len > bo->size - offset)
    return fail(XRT_SHIM_ERR_INVALID, "range of " + std::to_string(len) + " bytes at offset " +
                                          std::to_string(offset) + " lies outside the " +
                                          std::to_string(bo->size) + "-byte buffer");
  return XRT_SHIM_OK;
}

}  // namespace

extern "C" {

const char* xrt_shim_last_error(void) {
  if (last_error_lost) return "out of memory while recording an XRT error";
  return last_error_message.c_str();
}

const char* xrt_shim_xrt_version(void) { return build_version; }

int xrt_shim_has_hw_context(void) {
#if defined(XRT_SHIM_HAS_HW_CONTEXT)
  return 1;
#else
  return 0;
#endif
}

int xrt_shim_require_hw_context(void) {
#if defined(XRT_SHIM_HAS_HW_CONTEXT)
  return XRT_SHIM_OK;
#else
  return no_hw_context();
#endif
}

int xrt_shim_device_open(unsigned int index, xrt_shim_device** out) {
  if (!out) return null_argument("output pointer");
  return guarded([&] {
    xrt::device device(index);
    *out = new xrt_shim_device{std::move(device)};
    return XRT_SHIM_OK;
  });
}

void xrt_shim_device_free(xrt_shim_device* device) {
  try {
    delete device;
  } catch (...) {
  }
}

int xrt_shim_device_name(const xrt_shim_device* device, char* buf, size_t cap, size_t* len) {
  if (!device) return null_argument("device");
  if (!len) return null_argument("length pointer");
  if (cap > 0 && !buf) return null_argument("name buffer");
  return guarded([&] {
    const std::string name = device->device.get_info<xrt::info::device::name>();
    if (cap > 0) std::memcpy(buf, name.data(), name.size() < cap ? name.size() : cap);
    *len = name.size();
    return XRT_SHIM_OK;
  });
}

int xrt_shim_device_register_xclbin(const xrt_shim_device* device, const xrt_shim_xclbin* xclbin) {
#if defined(XRT_SHIM_HAS_HW_CONTEXT)
  if (!device) return null_argument("device");
  if (!xclbin) return null_argument("xclbin");
  return guarded([&] {
    // register_xclbin is non-const in XRT; the handle's device is shared state.
    xrt::device device_ref = device->device;
    device_ref.register_xclbin(xclbin->xclbin);
    return XRT_SHIM_OK;
  });
#else
  (void)device;
  (void)xclbin;
  return no_hw_context();
#endif
}

int xrt_shim_xclbin_load_file(const char* path, xrt_shim_xclbin** out) {
  if (!path) return null_argument("path");
  if (!out) return null_argument("output pointer");
  return guarded([&] {
    std::FILE* file = std::fopen(path, "rb");
    if (!file) {
      const int err = errno;
      return fail(XRT_SHIM_ERR_IO, std::string("cannot open xclbin file '") + path +
                                       "': " + std::strerror(err));
    }
    std::vector<char> bytes;
    char chunk[1 << 16];
    std::size_t got = 0;
    bool read_failed = false;
    int err = 0;
    try {
      while ((got = std::fread(chunk, 1, sizeof chunk, file)) > 0)
        bytes.insert(bytes.end(), chunk, chunk + got);
      if (std::ferror(file)) {
        read_failed = true;
        err = errno;
      }
    } catch (...) {
      std::fclose(file);
      throw;
    }
    std::fclose(file);
    if (read_failed)
      return fail(XRT_SHIM_ERR_IO, std::string("cannot read xclbin file '") + path +
                                       "': " + std::strerror(err));
    return load_xclbin(std::move(bytes), out);
  });
}

int xrt_shim_xclbin_load_bytes(const void* data, size_t len, xrt_shim_xclbin** out) {
  if (!data && len > 0) return null_argument("xclbin data");
  if (!out) return null_argument("output pointer");
  return guarded([&] {
    const char* begin = static_cast<const char*>(data);
    std::vector<char> bytes(begin, begin + len);
    return load_xclbin(std::move(bytes), out);
  });
}

void xrt_shim_xclbin_free(xrt_shim_xclbin* xclbin) {
  try {
    delete xclbin;
  } catch (...) {
  }
}

int xrt_shim_xclbin_kernel_count(const xrt_shim_xclbin* xclbin, size_t* out) {
  if (!xclbin) return null_argument("xclbin");
  if (!out) return null_argument("output pointer");
  *out = xclbin->kernel_names.size();
  return XRT_SHIM_OK;
}

int xrt_shim_xclbin_kernel_name(const xrt_shim_xclbin* xclbin, size_t index, const char** out) {
  if (!xclbin) return null_argument("xclbin");
  if (!out) return null_argument("output pointer");
  if (index >= xclbin->kernel_names.size())
    return guarded([&] {
      return fail(XRT_SHIM_ERR_INVALID, "kernel index " + std::to_string(index) +
                                            " is out of range: the xclbin has " +
                                            std::to_string(xclbin->kernel_names.size()) +
                                            " kernels");
    });
  *out = xclbin->kernel_names[index].c_str();
  return XRT_SHIM_OK;
}

int xrt_shim_xclbin_uuid(const xrt_shim_xclbin* xclbin, uint8_t out[16]) {
  if (!xclbin) return null_argument("xclbin");
  if (!out) return null_argument("output buffer");
  return guarded([&] {
    const xrt::uuid uuid = xclbin->xclbin.get_uuid();
    std::memcpy(out, uuid.get(), 16);
    return XRT_SHIM_OK;
  });
}

int xrt_shim_hw_context_create(const xrt_shim_device* device, const xrt_shim_xclbin* xclbin,
                               xrt_shim_hw_context** out) {
#if defined(XRT_SHIM_HAS_HW_CONTEXT)
  if (!device) return null_argument("device");
  if (!xclbin) return null_argument("xclbin");
  if (!out) return null_argument("output pointer");
  return guarded([&] {
    xrt::hw_context context(device->device, xclbin->xclbin.get_uuid());
    *out = new xrt_shim_hw_context{std::move(context)};
    return XRT_SHIM_OK;
  });
#else
  (void)device;
  (void)xclbin;
  (void)out;
  return no_hw_context();
#endif
}

void xrt_shim_hw_context_free(xrt_shim_hw_context* context) {
  try {
    delete context;
  } catch (...) {
  }
}

int xrt_shim_kernel_open(const xrt_shim_hw_context* context, const char* name,
                         xrt_shim_kernel** out) {
#if defined(XRT_SHIM_HAS_HW_CONTEXT)
  if (!context) return null_argument("hw_context");
  if (!name) return null_argument("kernel name");
  if (!out) return null_argument("output pointer");
  return guarded([&] {
    xrt::kernel kernel(context->context, std::string(name));
    *out = new xrt_shim_kernel{std::move(kernel)};
    return XRT_SHIM_OK;
  });
#else
  (void)context;
  (void)name;
  (void)out;
  return no_hw_context();
#endif
}

void xrt_shim_kernel_free(xrt_shim_kernel* kernel) {
  try {
    delete kernel;
  } catch (...) {
  }
}

int xrt_shim_kernel_group_id(const xrt_shim_kernel* kernel, int arg_index, int* out) {
  if (!kernel) return null_argument("kernel");
  if (!out) return null_argument("output pointer");
  return guarded([&] {
    *out = kernel->kernel.group_id(arg_index);
    return XRT_SHIM_OK;
  });
}

int xrt_shim_bo_alloc(const xrt_shim_device* device, size_t size, uint32_t flags, uint32_t group,
                      xrt_shim_bo** out) {
  if (size == 0)
    return fail(XRT_SHIM_ERR_INVALID, "buffer size 0: XRT buffers must hold at least one byte");
  if (!device) return null_argument("device");
  if (!out) return null_argument("output pointer");
  return guarded([&] {
    xrt::bo bo(device->device, size, static_cast<xrt::bo::flags>(flags),
               static_cast<xrt::memory_group>(group));
    *out = new xrt_shim_bo{std::move(bo), size};
    return XRT_SHIM_OK;
  });
}

int xrt_shim_bo_sub(const xrt_shim_bo* parent, size_t size, size_t offset, xrt_shim_bo** out) {
  if (size == 0)
    return fail(XRT_SHIM_ERR_INVALID, "sub-buffer size 0: a sub-buffer must hold at least one byte");
  if (!parent) return null_argument("parent buffer");
  if (!out) return null_argument("output pointer");
  return guarded([&] {
    const int range = check_range(parent, size, offset);
    if (range != XRT_SHIM_OK) return range;
    xrt::bo bo(parent->bo, size, offset);
    *out = new xrt_shim_bo{std::move(bo), size};
    return XRT_SHIM_OK;
  });
}

void xrt_shim_bo_free(xrt_shim_bo* bo) {
  try {
    delete bo;
  } catch (...) {
  }
}

int xrt_shim_bo_size(const xrt_shim_bo* bo, size_t* out) {
  if (!bo) return null_argument("buffer");
  if (!out) return null_argument("output pointer");
  *out = bo->size;
  return XRT_SHIM_OK;
}

int xrt_shim_bo_write(xrt_shim_bo* bo, const void* src, size_t len, size_t offset) {
  if (!bo) return null_argument("buffer");
  if (!src && len > 0) return null_argument("source");
  return guarded([&] {
    const int range = check_range(bo, len, offset);
    if (range != XRT_SHIM_OK) return range;
    if (len > 0) bo->bo.write(src, len, offset);
    return XRT_SHIM_OK;
  });
}

int xrt_shim_bo_read(const xrt_shim_bo* bo, void* dst, size_t len, size_t offset) {
  if (!bo) return null_argument("buffer");
  if (!dst && len > 0) return null_argument("destination");
  return guarded([&] {
    const int range = check_range(bo, len, offset);
    if (range != XRT_SHIM_OK) return range;
    // read() is non-const in XRT 2.13; the handle's bo is shared state.
    xrt::bo bo_ref = bo->bo;
    if (len > 0) bo_ref.read(dst, len, offset);
    return XRT_SHIM_OK;
  });
}

int xrt_shim_bo_map(xrt_shim_bo* bo, void** out) {
  if (!bo) return null_argument("buffer");
  if (!out) return null_argument("output pointer");
  return guarded([&] {
    *out = bo->bo.map<void*>();
    return XRT_SHIM_OK;
  });
}

int xrt_shim_bo_sync(xrt_shim_bo* bo, int direction, size_t len, size_t offset) {
  if (!bo) return null_argument("buffer");
  if (direction != XRT_SHIM_SYNC_TO_DEVICE && direction != XRT_SHIM_SYNC_FROM_DEVICE)
    return guarded([&] {
      return fail(XRT_SHIM_ERR_INVALID,
                  "sync direction " + std::to_string(direction) +
                      " is neither XRT_SHIM_SYNC_TO_DEVICE nor XRT_SHIM_SYNC_FROM_DEVICE");
    });
  return guarded([&] {
    const int range = check_range(bo, len, offset);
    if (range != XRT_SHIM_OK) return range;
    bo->bo.sync(static_cast<xclBOSyncDirection>(direction), len, offset);
    return XRT_SHIM_OK;
  });
}

int xrt_shim_kernel_start_npu(const xrt_shim_kernel* kernel, uint64_t opcode,
                              const xrt_shim_bo* instructions, uint32_t instruction_count,
                              const xrt_shim_bo* const* data, size_t n_data, xrt_shim_run** out) {
  if (!kernel) return null_argument("kernel");
  if (!instructions) return null_argument("instruction buffer");
  if (!out) return null_argument("output pointer");
  if (n_data < 1 || n_data > XRT_SHIM_MAX_DATA_BOS)
    return guarded([&] {
      return fail(XRT_SHIM_ERR_INVALID,
                  "a run takes 1 to " + std::to_string(XRT_SHIM_MAX_DATA_BOS) +
                      " data buffers, got " + std::to_string(n_data));
    });
  if (!data) return null_argument("data buffer array");
  for (size_t i = 0; i < n_data; ++i)
    if (!data[i]) return null_argument("data buffer");
  return guarded([&] {
    // XRT copies min(declared size, passed size) bytes of a scalar argument,
    // so 64-bit little-endian values fit both 32- and 64-bit declarations.
    const std::uint64_t count = instruction_count;
    xrt::kernel kernel_ref = kernel->kernel;
    const xrt::bo& instr = instructions->bo;
    xrt::run run;
    switch (n_data) {
      case 1:
        run = kernel_ref(opcode, instr, count, data[0]->bo);
        break;
      case 2:
        run = kernel_ref(opcode, instr, count, data[0]->bo, data[1]->bo);
        break;
      case 3:
        run = kernel_ref(opcode, instr, count, data[0]->bo, data[1]->bo, data[2]->bo);
        break;
      case 4:
        run = kernel_ref(opcode, instr, count, data[0]->bo, data[1]->bo, data[2]->bo,
                         data[3]->bo);
        break;
      default:
        run = kernel_ref(opcode, instr, count, data[0]->bo, data[1]->bo, data[2]->bo,
                         data[3]->bo, data[4]->bo);
        break;
    }
    *out = new xrt_shim_run{std::move(run)};
    return XRT_SHIM_OK;
  });
}

int xrt_shim_run_wait(const xrt_shim_run* run, uint64_t timeout_ms, int* state) {
  if (!run) return null_argument("run");
  if (!state) return null_argument("state pointer");
  // Bounded so that XRT's deadline arithmetic cannot overflow.
  const std::uint64_t max_ms = 0xFFFFFFFFull;
  const std::uint64_t ms = timeout_ms > max_ms ? max_ms : timeout_ms;
  return guarded([&] {
    *state = static_cast<int>(
        run->run.wait(std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(ms))));
    return XRT_SHIM_OK;
  });
}

int xrt_shim_run_state(const xrt_shim_run* run, int* state) {
  if (!run) return null_argument("run");
  if (!state) return null_argument("state pointer");
  return guarded([&] {
    *state = static_cast<int>(run->run.state());
    return XRT_SHIM_OK;
  });
}

int xrt_shim_run_abort(xrt_shim_run* run, int* state) {
  if (!run) return null_argument("run");
  if (!state) return null_argument("state pointer");
  return guarded([&] {
    *state = static_cast<int>(run->run.abort());
    return XRT_SHIM_OK;
  });
}

void xrt_shim_run_free(xrt_shim_run* run) {
  try {
    delete run;
  } catch (...) {
  }
}

}  // extern "C"
