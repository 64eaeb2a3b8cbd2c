// File: openai/error.h
//
// Error bodies in the shape OpenAI's API and vLLM return, which official clients parse:
//   {"error":{"message":...,"type":...,"param":null,"code":...}}
// Every front door (the proxy, the simulator, the HTTP server's own 400/413/431/500) writes its
// client-facing errors through error_body.
//
// Thread-safety: pure functions; safe from any thread.
#pragma once

#include <string>
#include <string_view>

namespace kvroute::openai {

// The body for `status`. `type` defaults to error_type(status); `code` defaults to the status as a
// number. Valid UTF-8 whatever the arguments hold: ill-formed sequences become \ufffd (a message
// may quote a client's bytes).
std::string error_body(int status, std::string_view message, std::string_view type = {},
                       std::string_view code = {});

// As error_body, naming the offending request field in "param" (empty: null).
std::string error_body_for_param(int status, std::string_view message, std::string_view param,
                                 std::string_view type = {}, std::string_view code = {});

// The OpenAI error type for a status ("invalid_request_error", "not_found_error", ...).
std::string_view error_type(int status);

}  // namespace kvroute::openai
