# kvroute_cc_library / kvroute_cc_test / kvroute_cc_bench / kvroute_cc_fuzz: one way to declare targets.

set(KVROUTE_WARNINGS -Wall -Wextra -Wpedantic $<$<CXX_COMPILER_ID:GNU>:-Wshadow=local> -Wnon-virtual-dtor -Wcast-align
    -Wunused -Woverloaded-virtual -Wimplicit-fallthrough -Wno-missing-field-initializers
    $<$<CXX_COMPILER_ID:Clang>:-Wthread-safety>
    -Wno-mismatched-new-delete)  # GCC 12 false positive on Asio coroutine frames
if(KVROUTE_WERROR)
  list(APPEND KVROUTE_WARNINGS -Werror)
endif()

if(KVROUTE_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
if(KVROUTE_TSAN)
  if(KVROUTE_SANITIZE)
    message(FATAL_ERROR "KVROUTE_TSAN and KVROUTE_SANITIZE cannot be combined: use two build trees")
  endif()
  # Asio's fenced blocks use atomic_thread_fence, which TSan does not model (GCC warns -Wtsan): with
  # them off, handlers are published through the scheduler's mutex, which TSan sees.
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_compile_definitions(BOOST_ASIO_DISABLE_FENCED_BLOCK)
  add_link_options(-fsanitize=thread)
endif()

# Asio is compiled once (src/http/asio_impl.cc), not in every translation unit.
add_compile_definitions(BOOST_ASIO_SEPARATE_COMPILATION
                        BOOST_ASIO_NO_DEPRECATED)

function(kvroute_cc_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SRCS})
  target_compile_options(${name} PRIVATE ${KVROUTE_WARNINGS})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
endfunction()

# Tests are GoogleTest programs registered with CTest (gtest_discover_tests runs at build time, so a
# suite that crashes at start-up fails the build, not silently).
include(GoogleTest)
function(kvroute_cc_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  target_compile_options(${name} PRIVATE ${KVROUTE_WARNINGS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  target_compile_definitions(${name} PRIVATE KVROUTE_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                             KVROUTE_BINARY_DIR="${PROJECT_BINARY_DIR}")
  gtest_discover_tests(${name} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                       PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "${ARG_LABELS}"
                       DISCOVERY_TIMEOUT 60)
endfunction()

function(kvroute_cc_bench name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  if(KVROUTE_BENCHMARKS)
    add_executable(${name} ${ARG_SRCS})
    target_compile_options(${name} PRIVATE ${KVROUTE_WARNINGS})
    target_link_libraries(${name} PRIVATE ${ARG_DEPS} benchmark::benchmark benchmark::benchmark_main)
  endif()
endfunction()

# libFuzzer targets build only with clang (scripts/fuzz.sh: -DKVROUTE_FUZZ=ON with clang++-14). Every
# translation unit then carries coverage instrumentation, so the libraries under test are fuzzed with
# feedback, not only the entry points.
if(KVROUTE_FUZZ)
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
# clang 14 cannot compile C++20 coroutines under UBSan ("Cannot represent a difference across
# sections", fixed in clang 15): in the fuzz build, coroutine sources go without UBSan (ASan and the
# coverage feedback stay). Call in the directory that builds them.
function(kvroute_coroutine_sources)
  if(KVROUTE_FUZZ)
    set_source_files_properties(${ARGN} PROPERTIES COMPILE_OPTIONS -fno-sanitize=undefined)
  endif()
endfunction()
function(kvroute_cc_fuzz name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  if(KVROUTE_FUZZ)
    add_executable(${name} ${ARG_SRCS})
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
    target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  endif()
endfunction()
