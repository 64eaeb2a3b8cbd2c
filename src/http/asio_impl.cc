// The one translation unit that compiles Asio (separate-compilation mode); every other file
// includes its headers with BOOST_ASIO_SEPARATE_COMPILATION. HTTP/1.1 parsing is our own
// (http/internal/parser.h, docs/adr/0011): Beast is not used. Asio's SSL layer (docs/adr/0022) too.
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
