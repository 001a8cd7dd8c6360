# System libraries come from Debian packages (scripts/bootstrap.sh installs them).
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
find_package(Protobuf REQUIRED)
find_package(absl REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(prometheus-cpp REQUIRED)
find_package(gRPC CONFIG REQUIRED)   # gRPC::grpc++, gRPC::grpc++_reflection
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
find_package(GTest)

# LibTorch comes from the pinned PyPI torch wheel inside the project venv. We import its
# libraries directly instead of find_package(Torch): the CUDA wheel's CMake config insists on a
# full CUDA toolkit even for CPU builds. torch_cpu + c10 is all a CPU build needs; CUDA builds
# add torch_cuda (linked with --no-as-needed so its kernels register).
if(NOT QS_TORCH_DIR)
  execute_process(
    COMMAND ${CMAKE_SOURCE_DIR}/.venv/bin/python -c "import os,torch;print(os.path.dirname(torch.__file__))"
    OUTPUT_VARIABLE QS_TORCH_DIR OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _torch_rc)
  if(NOT _torch_rc EQUAL 0)
    message(FATAL_ERROR "torch not found in ${CMAKE_SOURCE_DIR}/.venv; run scripts/bootstrap.sh")
  endif()
endif()
set(QS_TORCH_DIR ${QS_TORCH_DIR} CACHE PATH "torch package directory (site-packages/torch)")
message(STATUS "LibTorch from ${QS_TORCH_DIR}")
add_library(qs_torch INTERFACE)
target_include_directories(qs_torch SYSTEM INTERFACE
  ${QS_TORCH_DIR}/include ${QS_TORCH_DIR}/include/torch/csrc/api/include)
target_link_libraries(qs_torch INTERFACE
  ${QS_TORCH_DIR}/lib/libtorch_cpu.so ${QS_TORCH_DIR}/lib/libc10.so)
option(QS_WITH_CUDA "Link LibTorch's CUDA libraries (needs the CUDA runtime at run time)" OFF)
if(QS_WITH_CUDA)
  target_link_libraries(qs_torch INTERFACE
    -Wl,--no-as-needed ${QS_TORCH_DIR}/lib/libtorch_cuda.so ${QS_TORCH_DIR}/lib/libc10_cuda.so
    -Wl,--as-needed)
  target_compile_definitions(qs_torch INTERFACE QS_WITH_CUDA=1)
endif()
set_target_properties(qs_torch PROPERTIES INTERFACE_LINK_OPTIONS "-Wl,-rpath,${QS_TORCH_DIR}/lib")
add_library(quantserve::torch ALIAS qs_torch)
