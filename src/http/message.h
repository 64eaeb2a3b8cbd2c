// File: http/message.h
//
// Plain HTTP request/response values shared by the server, the client and the handlers, so that
// only the server and the client touch sockets. Value types: not synchronized.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/json.h"

namespace kvroute::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

// Case-insensitive header lookup; empty when absent.
std::string_view find_header(const Headers& headers, std::string_view name);
bool iequals(std::string_view a, std::string_view b);

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string target;  // "/v1/completions?x=y"
  Headers headers;
  std::string body;
  bool keep_alive = true;

  std::string_view header(std::string_view name) const { return find_header(headers, name); }
  std::string_view path() const;  // target without the query string
};

// Reason phrase for a status code ("OK", "Not Found", ...).
std::string_view reason_phrase(int status);

// OpenAI-style error body: {"error":{"message":...,"type":...,"param":null,"code":...}}.
std::string openai_error_body(int status, std::string_view message, std::string_view type = {},
                              std::string_view code = {});
// The OpenAI error type for a status ("invalid_request_error", "not_found_error", ...).
std::string_view openai_error_type(int status);

// Escapes a string for inclusion inside JSON double quotes (common/json.h).
using kvroute::append_json_escaped;

}  // namespace kvroute::http
