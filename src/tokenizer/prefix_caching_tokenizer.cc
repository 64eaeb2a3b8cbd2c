// File: tokenizer/prefix_caching_tokenizer.cc
#include "tokenizer/prefix_caching_tokenizer.h"

#include <xxhash.h>

#include "tokenizer/internal/util.h"

namespace kvroute::tokenizer {
namespace {
constexpr std::size_t kNodeOverhead = 96;

std::uint64_t run_hash(std::uint32_t parent, std::string_view run) {
  return XXH3_64bits_withSeed(run.data(), run.size(), parent);
}
}  // namespace

PrefixCachingTokenizer::PrefixCachingTokenizer(Tokenizer tokenizer, PrefixCacheOptions options)
    : tokenizer_(std::move(tokenizer)), options_(options) {
  nodes_.emplace_back();
}

std::uint32_t PrefixCachingTokenizer::find_child(std::uint32_t parent, std::string_view run,
                                                 std::uint64_t hash) const {
  auto [it, end] = children_.equal_range(hash);
  for (; it != end; ++it) {
    const Node& n = nodes_[it->second];
    if (n.parent == parent && n.text == run) return it->second;
  }
  return 0;
}

Result<std::vector<std::uint32_t>> PrefixCachingTokenizer::encode(std::string_view text,
                                                                  bool add_special_tokens) {
  KVROUTE_TRY(tokenizer_.check_input(text));
  std::vector<Tokenizer::Segment> segments;
  tokenizer_.split_on_added_tokens(text, segments);
  // Boundaries: indices of segments after which the cache may cut.
  std::vector<std::size_t> cuts;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    if (segments[i].token_id && tokenizer_.is_safe_cut_token(*segments[i].token_id))
      cuts.push_back(i);
  }

  std::vector<std::uint32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) {
    const auto pre = tokenizer_.post_prefix();
    ids.insert(ids.end(), pre.begin(), pre.end());
  }
  // Walk the cached runs from the root.
  std::size_t next_segment = 0;  // first segment not covered by the cache
  std::uint32_t node = 0;
  std::uint64_t generation = 0;
  std::size_t matched_cuts = 0;
  {
    MutexLock lock(mu_);
    generation = generation_;
    std::size_t begin = 0;
    std::vector<std::uint32_t> path;
    for (std::size_t c : cuts) {
      const std::string_view run = text.substr(begin, segments[c].end - begin);
      const std::uint32_t child = find_child(node, run, run_hash(node, run));
      if (child == 0) break;
      node = child;
      path.push_back(child);
      begin = segments[c].end;
      next_segment = c + 1;
      ++matched_cuts;
    }
    for (std::uint32_t n : path) ids.insert(ids.end(), nodes_[n].ids.begin(), nodes_[n].ids.end());
    ++stats_.requests;
    stats_.input_bytes += text.size();
    stats_.reused_bytes += next_segment == 0 ? 0 : segments[next_segment - 1].end;
    stats_.reused_tokens += ids.size() - (add_special_tokens ? tokenizer_.post_prefix().size() : 0);
  }

  // Encode the rest, remembering the runs that end at cuts.
  struct NewRun {
    std::size_t begin;
    std::size_t end;
    std::size_t ids_begin;
    std::size_t ids_end;
  };
  std::vector<NewRun> runs;
  std::size_t run_begin = next_segment == 0 ? 0 : segments[next_segment - 1].end;
  std::size_t run_ids_begin = ids.size();
  std::size_t cut_index = matched_cuts;
  for (std::size_t i = next_segment; i < segments.size(); ++i) {
    const Tokenizer::Segment& s = segments[i];
    if (s.token_id) {
      ids.push_back(*s.token_id);
    } else {
      KVROUTE_TRY(tokenizer_.encode_text_segment(text.substr(s.begin, s.end - s.begin), ids));
    }
    if (cut_index < cuts.size() && cuts[cut_index] == i) {
      runs.push_back({run_begin, s.end, run_ids_begin, ids.size()});
      run_begin = s.end;
      run_ids_begin = ids.size();
      ++cut_index;
    }
  }
  if (!runs.empty()) {
    MutexLock lock(mu_);
    std::size_t add = 0;
    for (const NewRun& r : runs)
      add += (r.end - r.begin) + 4 * (r.ids_end - r.ids_begin) + kNodeOverhead;
    if (stats_.held_bytes + add > options_.max_bytes) {
      nodes_.resize(1);
      children_.clear();
      stats_.held_bytes = 0;
      ++generation_;
      ++stats_.resets;
    }
    // Insert only if the path we matched is still there (no reset in between) and the cache has
    // room.
    if (generation == generation_ && add <= options_.max_bytes) {
      for (const NewRun& r : runs) {
        const std::string_view run = text.substr(r.begin, r.end - r.begin);
        const std::uint64_t h = run_hash(node, run);
        std::uint32_t child = find_child(node, run, h);
        if (child == 0) {
          child = static_cast<std::uint32_t>(nodes_.size());
          Node n;
          n.parent = node;
          n.hash = h;
          n.text = std::string(run);
          n.ids.assign(ids.begin() + static_cast<std::ptrdiff_t>(r.ids_begin),
                       ids.begin() + static_cast<std::ptrdiff_t>(r.ids_end));
          nodes_.push_back(std::move(n));
          children_.emplace(h, child);
          stats_.held_bytes += run.size() + 4 * (r.ids_end - r.ids_begin) + kNodeOverhead;
        }
        node = child;
      }
    }
    stats_.nodes = nodes_.size() - 1;
  }
  if (add_special_tokens) {
    const auto post = tokenizer_.post_suffix();
    ids.insert(ids.end(), post.begin(), post.end());
  }
  return ids;
}

PrefixCacheStats PrefixCachingTokenizer::stats() const {
  MutexLock lock(mu_);
  return stats_;
}

}  // namespace kvroute::tokenizer
