#include "openai/error.h"

#include <string>

#include "common/json.h"

namespace kvroute::openai {

std::string_view error_type(int status) {
  switch (status) {
    case 400:
    case 413:
    case 422:
    case 431:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    case 503:
      return "service_unavailable_error";
    case 502:
    case 504:
      return "upstream_error";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

std::string error_body(int status, std::string_view message, std::string_view type,
                       std::string_view code) {
  return error_body_for_param(status, message, {}, type, code);
}

std::string error_body_for_param(int status, std::string_view message, std::string_view param,
                                 std::string_view type, std::string_view code) {
  // The message may quote a client's bytes (a path, a header): never echo invalid UTF-8.
  std::string out = R"({"error":{"message":")";
  append_json_escaped_valid_utf8(out, message);
  out += R"(","type":")";
  append_json_escaped_valid_utf8(out, type.empty() ? error_type(status) : type);
  if (param.empty()) {
    out += R"(","param":null,"code":)";
  } else {
    out += R"(","param":")";
    append_json_escaped_valid_utf8(out, param);
    out += R"(","code":)";
  }
  if (code.empty()) {
    out += std::to_string(status);
  } else {
    out += '"';
    append_json_escaped_valid_utf8(out, code);
    out += '"';
  }
  out += "}}";
  return out;
}

}  // namespace kvroute::openai
