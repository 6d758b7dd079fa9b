# SentencePiece, built from source with moetrain rather than taken from the
# system: moetrain encodes ids through SentencePiece's normalizer and model
# directly (data/tokenizer.cpp), skipping the per-piece protocol buffer that
# SentencePieceProcessor::Encode builds, which halves the cost of encoding.
# That needs SentencePiece's internal headers, which no system package ships,
# and a library built from the same source as those headers.
#
# The source is the sentencepiece sdist on PyPI (it carries the C++ library
# with its bundled protobuf-lite and absl subset: nothing else to fetch). Where
# it comes from, first found wins:
#   -DMOETRAIN_SENTENCEPIECE_ARCHIVE=PATH, or the environment variable of that
#   name (scripts/offline-deps.sh sets it for a node without network);
#   a copy downloaded earlier into this build folder;
#   a download from PyPI at configure time.
# Every copy is checked against the SHA-256 below.
#
# Defines the INTERFACE targets moetrain_sentencepiece (static libraries and
# public headers) and moetrain_sentencepiece_internal (and internal headers).
#
# Script mode, to fetch the archive for an offline bundle:
#   cmake -DMOETRAIN_SENTENCEPIECE_DOWNLOAD_TO=DIR -P cmake/sentencepiece.cmake
set(MOETRAIN_SENTENCEPIECE_VERSION 0.2.1)
set(MOETRAIN_SENTENCEPIECE_SHA256 8138cec27c2f2282f4a34d9a016e3374cd40e5c6e9cb335063db66a0a3b71fad)
set(MOETRAIN_SENTENCEPIECE_URL
    "https://files.pythonhosted.org/packages/15/15/2e7a025fc62d764b151ae6d0f2a92f8081755ebe8d4a64099accc6f77ba6/sentencepiece-${MOETRAIN_SENTENCEPIECE_VERSION}.tar.gz")
set(_spm_file "sentencepiece-${MOETRAIN_SENTENCEPIECE_VERSION}.tar.gz")

# Downloads the archive to `path`, checked; stops with one line on failure.
function(_moetrain_download_sentencepiece path)
  file(DOWNLOAD "${MOETRAIN_SENTENCEPIECE_URL}" "${path}.part" STATUS status TLS_VERIFY ON)
  list(GET status 0 code)
  list(GET status 1 message)
  if(NOT code EQUAL 0)
    file(REMOVE "${path}.part")
    message(FATAL_ERROR "cannot download SentencePiece ${MOETRAIN_SENTENCEPIECE_VERSION} from "
                        "${MOETRAIN_SENTENCEPIECE_URL}: ${message} (without network, give a copy with "
                        "-DMOETRAIN_SENTENCEPIECE_ARCHIVE=PATH; scripts/offline-deps.sh bundles one)")
  endif()
  file(SHA256 "${path}.part" sum)
  if(NOT sum STREQUAL MOETRAIN_SENTENCEPIECE_SHA256)
    file(REMOVE "${path}.part")
    message(FATAL_ERROR "the SentencePiece archive downloaded from ${MOETRAIN_SENTENCEPIECE_URL} has SHA-256 "
                        "${sum}, not ${MOETRAIN_SENTENCEPIECE_SHA256}")
  endif()
  file(RENAME "${path}.part" "${path}")
endfunction()

if(CMAKE_SCRIPT_MODE_FILE)
  if(NOT MOETRAIN_SENTENCEPIECE_DOWNLOAD_TO)
    message(FATAL_ERROR "usage: cmake -DMOETRAIN_SENTENCEPIECE_DOWNLOAD_TO=DIR -P ${CMAKE_SCRIPT_MODE_FILE}")
  endif()
  file(MAKE_DIRECTORY "${MOETRAIN_SENTENCEPIECE_DOWNLOAD_TO}")
  _moetrain_download_sentencepiece("${MOETRAIN_SENTENCEPIECE_DOWNLOAD_TO}/${_spm_file}")
  message(STATUS "SentencePiece ${MOETRAIN_SENTENCEPIECE_VERSION} source: ${MOETRAIN_SENTENCEPIECE_DOWNLOAD_TO}/${_spm_file}")
  return()
endif()

if(NOT MOETRAIN_SENTENCEPIECE_ARCHIVE AND DEFINED ENV{MOETRAIN_SENTENCEPIECE_ARCHIVE})
  set(MOETRAIN_SENTENCEPIECE_ARCHIVE "$ENV{MOETRAIN_SENTENCEPIECE_ARCHIVE}")
endif()
set(_spm_deps "${CMAKE_BINARY_DIR}/_deps")
if(MOETRAIN_SENTENCEPIECE_ARCHIVE)
  set(_spm_archive "${MOETRAIN_SENTENCEPIECE_ARCHIVE}")
  if(NOT EXISTS "${_spm_archive}")
    message(FATAL_ERROR "MOETRAIN_SENTENCEPIECE_ARCHIVE names ${_spm_archive}, which does not exist")
  endif()
else()
  set(_spm_archive "${_spm_deps}/${_spm_file}")
  if(NOT EXISTS "${_spm_archive}")
    message(STATUS "Downloading SentencePiece ${MOETRAIN_SENTENCEPIECE_VERSION} source from PyPI")
    _moetrain_download_sentencepiece("${_spm_archive}")
  endif()
endif()
set(MOETRAIN_SENTENCEPIECE_ARCHIVE "${_spm_archive}" CACHE FILEPATH "SentencePiece source archive (PyPI sdist)")

# Unpack once per archive (the stamp holds its checksum).
set(_spm_root "${_spm_deps}/sentencepiece-${MOETRAIN_SENTENCEPIECE_VERSION}")
set(_spm_stamp "${_spm_root}.unpacked")
set(_spm_stamped "")
if(EXISTS "${_spm_stamp}")
  file(READ "${_spm_stamp}" _spm_stamped)
endif()
if(NOT _spm_stamped STREQUAL MOETRAIN_SENTENCEPIECE_SHA256)
  file(SHA256 "${_spm_archive}" sum)
  if(NOT sum STREQUAL MOETRAIN_SENTENCEPIECE_SHA256)
    message(FATAL_ERROR "${_spm_archive} has SHA-256 ${sum}, not ${MOETRAIN_SENTENCEPIECE_SHA256} "
                        "(SentencePiece ${MOETRAIN_SENTENCEPIECE_VERSION}'s sdist from PyPI)")
  endif()
  file(REMOVE_RECURSE "${_spm_root}")
  file(ARCHIVE_EXTRACT INPUT "${_spm_archive}" DESTINATION "${_spm_deps}")
  file(WRITE "${_spm_stamp}" "${MOETRAIN_SENTENCEPIECE_SHA256}")
endif()
set(_spm_src "${_spm_root}/sentencepiece")
if(NOT EXISTS "${_spm_src}/src/normalizer.h")
  message(FATAL_ERROR "${_spm_archive} holds no SentencePiece C++ source (expected sentencepiece/src/normalizer.h)")
endif()

# Static libraries only, no tcmalloc (moetrain's allocator stays glibc's), no
# install rules; built only as far as moetrain links them.
set(SPM_ENABLE_SHARED OFF CACHE BOOL "" FORCE)
set(SPM_ENABLE_TCMALLOC OFF CACHE BOOL "" FORCE)
set(SPM_BUILD_TEST OFF CACHE BOOL "" FORCE)
add_subdirectory("${_spm_src}" "${_spm_deps}/sentencepiece-build" EXCLUDE_FROM_ALL SYSTEM)
# SentencePiece asks for -O3, which moetrain's RelWithDebInfo -O2 (later on
# the command line) would override; target options come last.
foreach(target sentencepiece-static sentencepiece_train-static)
  target_compile_options(${target} PRIVATE -O3)
endforeach()

# moetrain_sentencepiece: the libraries and the public headers
# (sentencepiece_processor.h, sentencepiece_trainer.h), copied into a folder
# of their own so that SentencePiece's other headers (util.h, common.h, ...)
# stay out of moetrain's include path.
set(_spm_public "${_spm_deps}/sentencepiece-include")
foreach(header sentencepiece_processor.h sentencepiece_trainer.h)
  configure_file("${_spm_src}/src/${header}" "${_spm_public}/${header}" COPYONLY)
endforeach()
add_library(moetrain_sentencepiece INTERFACE)
target_link_libraries(moetrain_sentencepiece INTERFACE sentencepiece_train-static sentencepiece-static)
target_include_directories(moetrain_sentencepiece SYSTEM INTERFACE "${_spm_public}")

# moetrain_sentencepiece_internal: also the internal headers (normalizer.h,
# model_interface.h, the generated sentencepiece_model.pb.h with its bundled
# protobuf-lite and absl subset) as SentencePiece's own sources see them, with
# the same string_view. Only for a target without LibTorch, whose include
# folder carries another protobuf.
add_library(moetrain_sentencepiece_internal INTERFACE)
target_link_libraries(moetrain_sentencepiece_internal INTERFACE moetrain_sentencepiece)
target_include_directories(moetrain_sentencepiece_internal SYSTEM INTERFACE
  "${_spm_src}/src" "${_spm_src}/src/builtin_pb" "${_spm_src}/third_party/protobuf-lite"
  "${_spm_src}/third_party" "${_spm_src}/third_party/absl" "${_spm_src}" "${_spm_deps}/sentencepiece-build")
target_compile_definitions(moetrain_sentencepiece_internal INTERFACE _USE_INTERNAL_STRING_VIEW HAVE_PTHREAD=1)
