# Install: the header, libkeel (shared and static), the keel command, keel.pc for pkg-config and
# a CMake package: find_package(keel) gives keel::keel (the shared library) and keel::keel_static.
include(CMakePackageConfigHelpers)

install(FILES include/keel.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS keel_shared keel_static EXPORT keelTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(TARGET keel)
  install(TARGETS keel RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

set(KEEL_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/keel)
install(EXPORT keelTargets NAMESPACE keel:: DESTINATION ${KEEL_CMAKE_DIR})
configure_package_config_file(cmake/keelConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/keelConfig.cmake
  INSTALL_DESTINATION ${KEEL_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/keelConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/keelConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/keelConfigVersion.cmake
  DESTINATION ${KEEL_CMAKE_DIR})

# pkg-config: the prefix is found from the .pc file's own place (${pcfiledir}), so an install
# with `cmake --install --prefix DIR` or a moved tree still works.
file(RELATIVE_PATH KEEL_PC_TO_PREFIX "/keel-prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/keel-prefix")
configure_file(cmake/keel.pc.in ${CMAKE_CURRENT_BINARY_DIR}/keel.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/keel.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
