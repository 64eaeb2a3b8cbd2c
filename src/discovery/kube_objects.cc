#include "discovery/internal/kube_objects.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>

namespace kvroute::discovery::internal {

namespace dom = simdjson::dom;

namespace {

Error bad(std::string_view what) { return Error::invalid(fmt::format("kubernetes: {}", what)); }

std::string_view str(dom::element e, std::string_view key) {
  std::string_view v;
  if (e[key].get_string().get(v)) return {};
  return v;
}

Result<PoolSpec> pool_from(dom::element obj) {
  dom::element spec;
  if (obj["spec"].get(spec) || !spec.is_object()) return fail(bad("InferencePool has no spec"));
  PoolSpec p;
  dom::element sel;
  if (!spec["selector"].get(sel) && sel.is_object()) {
    dom::object labels;
    // v1: selector.matchLabels; v1alpha2: the selector is the label map itself.
    dom::element ml;
    if (!sel["matchLabels"].get(ml)) {
      if (ml.get_object().get(labels)) return fail(bad("selector.matchLabels is not a map"));
    } else if (sel.get_object().get(labels)) {
      return fail(bad("selector is not a map"));
    }
    for (auto [k, v] : labels) {
      std::string_view value;
      if (v.get_string().get(value)) return fail(bad("a selector label's value is not a string"));
      p.selector.emplace(std::string(k), std::string(value));
    }
  }
  if (p.selector.empty()) return fail(bad("InferencePool selects no labels"));
  auto add_port = [&](dom::element n) -> Status {
    std::int64_t port = 0;
    if (n.get_int64().get(port) || port < 1 || port > 65535)
      return fail(bad("a target port is not 1..65535"));
    p.target_ports.push_back(static_cast<std::uint16_t>(port));
    return {};
  };
  dom::array ports;
  dom::element single;
  if (!spec["targetPorts"].get_array().get(ports)) {
    for (dom::element tp : ports) {
      dom::element n;
      if (tp["number"].get(n)) return fail(bad("targetPorts[] has no number"));
      KVROUTE_TRY(add_port(n));
    }
  } else if (!spec["targetPortNumber"].get(single)) {
    KVROUTE_TRY(add_port(single));
  }
  if (p.target_ports.empty()) return fail(bad("InferencePool has no target ports"));
  std::sort(p.target_ports.begin(), p.target_ports.end());
  p.target_ports.erase(std::unique(p.target_ports.begin(), p.target_ports.end()),
                       p.target_ports.end());
  return p;
}

Result<Pod> pod_from(dom::element obj) {
  Pod p;
  dom::element meta;
  if (obj["metadata"].get(meta) || !meta.is_object()) return fail(bad("pod has no metadata"));
  p.name = std::string(str(meta, "name"));
  if (p.name.empty()) return fail(bad("pod has no name"));
  dom::element del;
  const bool deleting = !meta["deletionTimestamp"].get(del) && !del.is_null();
  dom::element status;
  if (obj["status"].get(status) || !status.is_object()) return p;  // not scheduled yet
  p.ip = std::string(str(status, "podIP"));
  bool ready = false;
  dom::array conds;
  if (!status["conditions"].get_array().get(conds)) {
    for (dom::element c : conds) {
      if (str(c, "type") == "Ready") ready = str(c, "status") == "True";
    }
  }
  p.ready = ready && !deleting && !p.ip.empty() && str(status, "phase") == "Running";
  return p;
}

Result<dom::element> parse_doc(dom::parser& parser, std::string_view json) {
  dom::element doc;
  if (auto err = parser.parse(json.data(), json.size()).get(doc)) {
    return fail(bad(std::string("invalid JSON: ") + simdjson::error_message(err)));
  }
  if (!doc.is_object()) return fail(bad("not a JSON object"));
  return doc;
}

}  // namespace

Result<PoolSpec> parse_pool(std::string_view json) {
  dom::parser parser;
  KVROUTE_TRY(auto doc, parse_doc(parser, json));
  return pool_from(doc);
}

Result<Pod> parse_pod(std::string_view json) {
  dom::parser parser;
  KVROUTE_TRY(auto doc, parse_doc(parser, json));
  return pod_from(doc);
}

Result<std::pair<std::vector<Pod>, std::string>> parse_pod_list(std::string_view json) {
  dom::parser parser;
  KVROUTE_TRY(auto doc, parse_doc(parser, json));
  std::pair<std::vector<Pod>, std::string> out;
  dom::element meta;
  if (!doc["metadata"].get(meta)) out.second = std::string(str(meta, "resourceVersion"));
  if (out.second.empty()) return fail(bad("pod list has no resourceVersion"));
  dom::element items_el;
  if (doc["items"].get(items_el)) return fail(bad("pod list has no items"));
  if (items_el.is_null()) return out;  // an empty list
  dom::array items;
  if (items_el.get_array().get(items)) return fail(bad("pod list items is not a list"));
  for (dom::element it : items) {
    auto pod = pod_from(it);
    if (pod) out.first.push_back(std::move(*pod));  // a malformed pod is skipped, not fatal
  }
  return out;
}

Result<WatchEvent> parse_event(std::string_view line, bool pods) {
  dom::parser parser;
  KVROUTE_TRY(auto doc, parse_doc(parser, line));
  WatchEvent ev;
  const std::string_view type = str(doc, "type");
  if (type == "ADDED") {
    ev.type = EventType::kAdded;
  } else if (type == "MODIFIED") {
    ev.type = EventType::kModified;
  } else if (type == "DELETED") {
    ev.type = EventType::kDeleted;
  } else if (type == "BOOKMARK") {
    ev.type = EventType::kBookmark;
  } else if (type == "ERROR") {
    ev.type = EventType::kError;
  } else {
    return fail(bad(fmt::format("unknown watch event type '{}'", type)));
  }
  dom::element obj;
  if (doc["object"].get(obj) || !obj.is_object()) return fail(bad("watch event has no object"));
  if (ev.type == EventType::kError) {
    std::int64_t code = 0;
    if (!obj["code"].get_int64().get(code)) ev.error_code = static_cast<int>(code);
    return ev;
  }
  dom::element meta;
  if (!obj["metadata"].get(meta)) ev.resource_version = std::string(str(meta, "resourceVersion"));
  if (ev.type == EventType::kBookmark) return ev;
  if (pods) {
    KVROUTE_TRY(ev.pod, pod_from(obj));
  } else if (auto pool = pool_from(obj)) {
    ev.pool = std::move(*pool);
  }
  return ev;
}

std::vector<config::BackendConfig> backends_of(const PoolSpec& pool, const std::vector<Pod>& pods) {
  std::vector<config::BackendConfig> out;
  for (const auto& p : pods) {
    if (!p.ready) continue;
    for (auto port : pool.target_ports) {
      config::BackendConfig b;
      const bool v6 = p.ip.find(':') != std::string::npos;
      b.url =
          v6 ? fmt::format("http://[{}]:{}", p.ip, port) : fmt::format("http://{}:{}", p.ip, port);
      b.name = pool.target_ports.size() == 1 ? p.name : fmt::format("{}:{}", p.name, port);
      out.push_back(std::move(b));
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

std::string label_selector_query(const std::map<std::string, std::string>& labels) {
  std::string raw;
  for (const auto& [k, v] : labels) {
    if (!raw.empty()) raw += ',';
    raw += k;
    raw += '=';
    raw += v;
  }
  std::string out;
  for (unsigned char c : raw) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

}  // namespace kvroute::discovery::internal
