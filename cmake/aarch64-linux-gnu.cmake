# Cross build for aarch64 Linux with Debian's cross compiler (apt-get install gcc-aarch64-linux-gnu
# libc6-dev-arm64-cross): cmake -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake. The library
# gets the NEON path (CMakeLists.txt picks the kernels by CMAKE_SYSTEM_PROCESSOR). When qemu-user
# is installed (qemu-user-static), ctest runs the test programs through it, against the cross C
# library in /usr/aarch64-linux-gnu: `make test-neon` (scripts/test-neon.sh) does all of this.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(KEEL_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${KEEL_CROSS_TRIPLE}-gcc)

# Libraries and headers from the cross tree only; programs (qemu, pkg-config) from the host.
set(CMAKE_FIND_ROOT_PATH /usr/${KEEL_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# pkg-config must not hand the host's (x86-64) libraries to the cross link
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/${KEEL_CROSS_TRIPLE}/pkgconfig:/usr/${KEEL_CROSS_TRIPLE}/lib/pkgconfig)

find_program(KEEL_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(KEEL_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${KEEL_QEMU_AARCH64} -L /usr/${KEEL_CROSS_TRIPLE})
endif()
