# Generates version.cpp with the git commit at every build (rewritten only when it changes).
set(COMBO_VERSION_CPP "${PROJECT_BINARY_DIR}/generated/combo_version.cpp")
add_custom_target(combo_version
  COMMAND ${CMAKE_COMMAND}
          -DSRC=${PROJECT_SOURCE_DIR} -DOUT=${COMBO_VERSION_CPP} -DVERSION=${PROJECT_VERSION}
          -P ${PROJECT_SOURCE_DIR}/cmake/WriteVersion.cmake
  BYPRODUCTS ${COMBO_VERSION_CPP}
  COMMENT "ComboAVS: git commit")
# The file must exist at configure time for add_library.
if(NOT EXISTS ${COMBO_VERSION_CPP})
  execute_process(COMMAND ${CMAKE_COMMAND}
    -DSRC=${PROJECT_SOURCE_DIR} -DOUT=${COMBO_VERSION_CPP} -DVERSION=${PROJECT_VERSION}
    -P ${PROJECT_SOURCE_DIR}/cmake/WriteVersion.cmake)
endif()
