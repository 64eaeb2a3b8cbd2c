#include "sim/internal/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <span>
#include <utility>

#include "common/hash.h"

namespace kvroute::sim {

namespace {

constexpr std::uint32_t kSpecialTokens = 256;  // Llama 3: ids 128000..128255

std::uint64_t mix64(std::uint64_t x) {  // splitmix64 finalizer
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

std::uint32_t ceil_div(std::uint32_t a, std::uint32_t b) { return (a + b - 1) / b; }

}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kNone:
      break;
  }
  return "";
}

struct Engine::Request {
  std::uint64_t id = 0;
  std::vector<std::uint32_t> tokens;  // prompt, then generated tokens
  std::uint32_t num_prompt = 0;
  std::uint32_t max_tokens = 0;
  std::uint32_t min_tokens = 0;
  std::vector<std::uint32_t> stop_token_ids;
  std::uint64_t token_seed = 0;
  std::uint32_t num_computed = 0;           // tokens whose KV is (being) computed
  std::vector<std::uint32_t> blocks;        // block table
  std::uint32_t num_cached_blocks = 0;      // leading blocks registered in the prefix cache
  std::vector<std::uint64_t> block_hashes;  // of every full block of `tokens`, filled lazily
  std::int64_t cached_tokens = -1;          // hit at first admission
  std::uint32_t num_preemptions = 0;
  bool running = false;

  std::uint32_t num_tokens() const { return static_cast<std::uint32_t>(tokens.size()); }
  std::uint32_t num_output() const { return num_tokens() - num_prompt; }
};

Engine::Engine(EngineConfig config)
    : config_(std::move(config)),
      hash_seed_(config_.hash_seed == 0
                     ? hash64(config_.model)
                     : hash64(config_.model + "#" + std::to_string(config_.hash_seed))),
      sample_vocab_(config_.vocab_size > 2 * kSpecialTokens ? config_.vocab_size - kSpecialTokens
                                                            : config_.vocab_size),
      pool_(config_.num_gpu_blocks, config_.enable_prefix_caching, config_.emit_kv_events) {}

Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;
Engine::~Engine() = default;

Result<Engine> Engine::create(EngineConfig config) {
  if (config.block_size == 0 || config.num_gpu_blocks == 0 || config.max_num_seqs == 0 ||
      config.max_num_batched_tokens == 0 || config.vocab_size == 0) {
    return fail(Error::invalid(
        "block_size, num_gpu_blocks, max_num_seqs, max_num_batched_tokens and vocab_size must be "
        "positive"));
  }
  if (config.num_gpu_blocks >= BlockPool::kNoBlock - 1) {
    return fail(Error::invalid("num_gpu_blocks is too large"));
  }
  const std::uint64_t capacity =
      static_cast<std::uint64_t>(config.num_gpu_blocks) * config.block_size;
  if (config.max_model_len == 0) {
    std::uint64_t len = std::min<std::uint64_t>(capacity, 0xffffffffu);
    if (!config.enable_chunked_prefill) {
      len = std::min<std::uint64_t>(len, config.max_num_batched_tokens);
    }
    config.max_model_len = static_cast<std::uint32_t>(len);
  }
  if (config.max_model_len > capacity) {
    return fail(Error::invalid(fmt::format(
        "To serve at least one request with the model's max seq len ({}), the KV cache needs {} "
        "tokens, more than its {} blocks of {} ({} tokens). Try decreasing max_model_len.",
        config.max_model_len, config.max_model_len, config.num_gpu_blocks, config.block_size,
        capacity)));
  }
  if (!config.enable_chunked_prefill && config.max_num_batched_tokens < config.max_model_len) {
    return fail(Error::invalid(fmt::format(
        "max_num_batched_tokens ({}) is smaller than max_model_len ({}). This effectively limits "
        "the maximum sequence length to max_num_batched_tokens and makes vLLM reject longer "
        "sequences. Please increase max_num_batched_tokens or decrease max_model_len.",
        config.max_num_batched_tokens, config.max_model_len)));
  }
  if (config.max_num_batched_tokens < config.max_num_seqs) {
    return fail(Error::invalid(fmt::format(
        "max_num_batched_tokens ({}) must be greater than or equal to max_num_seqs ({}).",
        config.max_num_batched_tokens, config.max_num_seqs)));
  }
  return Engine(std::move(config));
}

Result<std::uint64_t> Engine::add_request(SimRequest request) {
  const std::size_t prompt_len = request.prompt_token_ids.size();
  const std::uint32_t max_len = config_.max_model_len;
  if (prompt_len == 0) return fail(Error::invalid("The decoder prompt cannot be empty"));
  for (std::uint32_t t : request.prompt_token_ids) {
    if (t >= config_.vocab_size) {
      return fail(Error::invalid(fmt::format("Token id {} is out of vocabulary", t)));
    }
  }
  if (prompt_len >= max_len) {
    return fail(Error::invalid(fmt::format(
        "This model's maximum context length is {} tokens. However, your request has {} input "
        "tokens. Please reduce the length of the input messages.",
        max_len, prompt_len)));
  }
  const auto prompt = static_cast<std::uint32_t>(prompt_len);
  std::uint32_t max_tokens = max_len - prompt;
  if (request.max_tokens) {
    if (*request.max_tokens == 0) {
      return fail(Error::invalid("max_tokens must be at least 1, got 0."));
    }
    if (static_cast<std::uint64_t>(prompt) + *request.max_tokens > max_len) {
      return fail(Error::invalid(fmt::format(
          "'max_tokens' or 'max_completion_tokens' is too large: {}. This model's maximum context "
          "length is {} tokens and your request has {} input tokens ({} > {} - {}).",
          *request.max_tokens, max_len, prompt, *request.max_tokens, max_len, prompt)));
    }
    max_tokens = *request.max_tokens;
  }
  if (request.min_tokens > max_tokens) {
    return fail(Error::invalid(
        fmt::format("min_tokens must be less than or equal to max_tokens={}, got {}.", max_tokens,
                    request.min_tokens)));
  }

  auto r = std::make_unique<Request>();
  r->id = next_id_++;
  r->num_prompt = prompt;
  r->max_tokens = max_tokens;
  r->min_tokens = request.min_tokens;
  r->stop_token_ids = std::move(request.stop_token_ids);
  const std::uint64_t seed =
      config_.seed ^ (request.seed ? mix64(*request.seed + 0x9e3779b97f4a7c15ULL) : 0);
  r->token_seed = hash64(std::span<const std::uint32_t>(request.prompt_token_ids), seed);
  r->tokens = std::move(request.prompt_token_ids);
  r->tokens.reserve(static_cast<std::size_t>(prompt) + std::min<std::uint32_t>(max_tokens, 4096));
  Request* raw = r.get();
  requests_.emplace(raw->id, std::move(r));
  waiting_.push_back(raw);
  return raw->id;
}

bool Engine::abort(std::uint64_t request_id) {
  auto it = requests_.find(request_id);
  if (it == requests_.end()) return false;
  Request* r = it->second.get();
  if (r->running) {
    running_.erase(std::find(running_.begin(), running_.end(), r));
  } else {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), r));
  }
  pool_.free_reversed(r->blocks);
  ++counters_.num_aborted_total;
  requests_.erase(it);
  return true;
}

void Engine::update_block_hashes(Request& r) {
  const std::uint32_t bs = config_.block_size;
  const std::size_t full = r.tokens.size() / bs;
  while (r.block_hashes.size() < full) {
    const std::size_t i = r.block_hashes.size();
    const std::uint64_t parent = i == 0 ? hash_seed_ : r.block_hashes.back();
    r.block_hashes.push_back(
        hash64(std::span<const std::uint32_t>(r.tokens.data() + i * bs, bs), parent));
  }
}

std::uint32_t Engine::find_cache_hit(Request& r) {
  hit_blocks_.clear();
  update_block_hashes(r);
  if (!config_.kv_connector.empty()) return 0;  // the connector bypasses the local cache
  // At least the last token is recomputed (its logits are needed): hit <= num_tokens - 1.
  const std::size_t max_blocks =
      std::min<std::size_t>(r.block_hashes.size(), (r.num_tokens() - 1) / config_.block_size);
  for (std::size_t i = 0; i < max_blocks; ++i) {
    const std::uint32_t b = pool_.lookup(r.block_hashes[i]);
    if (b == BlockPool::kNoBlock) break;
    hit_blocks_.push_back(b);
  }
  return static_cast<std::uint32_t>(hit_blocks_.size()) * config_.block_size;
}

// vLLM's KVCacheManager.allocate_slots: make room for num_computed + num_new tokens (touching the
// new cache hits in hit_blocks_ first), then cache the blocks those tokens fill.
bool Engine::allocate_slots(Request& r, std::uint32_t num_computed, std::uint32_t num_new) {
  const std::uint32_t bs = config_.block_size;
  const std::uint32_t total = num_computed + num_new;
  const std::uint32_t needed = ceil_div(total, bs);
  const auto have = static_cast<std::uint32_t>(r.blocks.size() + hit_blocks_.size());
  const std::uint32_t to_allocate = needed > have ? needed - have : 0;
  std::uint32_t evictable_hits = 0;
  for (std::uint32_t b : hit_blocks_) evictable_hits += pool_.ref_count(b) == 0 ? 1 : 0;
  if (to_allocate + evictable_hits > pool_.num_free()) return false;

  if (!hit_blocks_.empty()) {
    pool_.touch(hit_blocks_);
    r.blocks.insert(r.blocks.end(), hit_blocks_.begin(), hit_blocks_.end());
    r.num_cached_blocks = static_cast<std::uint32_t>(hit_blocks_.size());
    hit_blocks_.clear();
  }
  pool_.allocate(to_allocate, r.blocks);

  if (pool_.caching_enabled()) {
    const std::uint32_t num_full = std::min(total, r.num_tokens()) / bs;
    if (num_full > r.num_cached_blocks) {
      update_block_hashes(r);
      const std::uint32_t first = r.num_cached_blocks;
      const std::uint32_t n = num_full - first;
      std::optional<std::uint64_t> parent;
      if (first > 0) parent = r.block_hashes[first - 1];
      pool_.cache_full_blocks(
          std::span<const std::uint32_t>(r.blocks.data() + first, n),
          std::span<const std::uint64_t>(r.block_hashes.data() + first, n), parent,
          std::span<const std::uint32_t>(r.tokens.data() + static_cast<std::size_t>(first) * bs,
                                         static_cast<std::size_t>(n) * bs),
          bs);
      r.num_cached_blocks = num_full;
    }
  }
  return true;
}

void Engine::preempt(Request* r) {
  pool_.free_reversed(r->blocks);
  r->blocks.clear();
  r->num_cached_blocks = 0;
  r->num_computed = 0;
  r->running = false;
  ++r->num_preemptions;
  ++counters_.num_preemptions_total;
  waiting_.push_front(r);
}

std::uint32_t Engine::sample_token(const Request& r, std::uint32_t position) const {
  const std::uint64_t x =
      mix64(r.token_seed + (static_cast<std::uint64_t>(position) + 1) * 0x9e3779b97f4a7c15ULL);
  return static_cast<std::uint32_t>(x % sample_vocab_);
}

void Engine::finish(Request* r) {
  pool_.free_reversed(r->blocks);
  r->blocks.clear();
  r->running = false;
}

StepResult Engine::step(double now_s) {
  StepResult res;
  res.start_s = now_s;
  std::uint32_t budget = config_.max_num_batched_tokens;
  scheduled_.clear();
  hit_blocks_.clear();

  // 1. Running requests, in admission order: their next prompt chunk or one decode token.
  std::size_t i = 0;
  while (i < running_.size() && budget > 0) {
    Request* r = running_[i];
    const std::uint32_t num_new = std::min(r->num_tokens() - r->num_computed, budget);
    bool scheduled = false;
    for (;;) {
      if (allocate_slots(*r, r->num_computed, num_new)) {
        scheduled = true;
        break;
      }
      // Out of blocks: preempt the most recently admitted request (recompute mode).
      Request* victim = running_.back();
      running_.pop_back();
      preempt(victim);
      ++res.num_preempted;
      if (victim == r) break;
    }
    if (!scheduled) break;
    scheduled_.emplace_back(r, num_new);
    budget -= num_new;
    ++i;
  }

  // 2. Waiting requests, FCFS, unless this step preempted (as vLLM).
  if (res.num_preempted == 0) {
    while (!waiting_.empty() && budget > 0 && running_.size() < config_.max_num_seqs) {
      Request* r = waiting_.front();
      std::uint32_t hit = 0;
      if (pool_.caching_enabled()) {
        hit = find_cache_hit(*r);
        if (r->num_preemptions == 0) {
          counters_.prefix_cache_queries_total += r->num_tokens();
          counters_.prefix_cache_hits_total += hit;
        } else {
          counters_.preempted_prefix_cache_queries_total += r->num_tokens();
          counters_.preempted_prefix_cache_hits_total += hit;
        }
      }
      std::uint32_t num_new = r->num_tokens() - hit;
      if (!config_.enable_chunked_prefill && num_new > budget) break;
      num_new = std::min(num_new, budget);
      if (!allocate_slots(*r, hit, num_new)) break;
      waiting_.pop_front();
      running_.push_back(r);
      r->running = true;
      r->num_computed = hit;
      if (r->cached_tokens < 0) r->cached_tokens = hit;
      scheduled_.emplace_back(r, num_new);
      budget -= num_new;
    }
  }
  hit_blocks_.clear();

  // 3. Run the batch: advance computed tokens, sample where a sequence reached its end.
  bool any_finished = false;
  for (auto [r, num_new] : scheduled_) {
    const bool samples = r->num_computed + num_new >= r->num_tokens();
    if (num_new == 1 && samples) {
      ++res.shape.decode_seqs;
      res.shape.decode_context_tokens += r->num_computed;
    } else {
      res.shape.prefills.push_back({.new_tokens = num_new, .context_tokens = r->num_computed});
    }
    res.num_scheduled_tokens += num_new;
    r->num_computed += num_new;
    if (!samples) continue;

    const std::uint32_t token = sample_token(*r, r->num_output());
    r->tokens.push_back(token);
    const std::uint32_t num_output = r->num_output();
    RequestOutput out{
        .request_id = r->id,
        .token_id = token,
        .first_token = num_output == 1,
        .prompt_tokens = r->num_prompt,
        .cached_tokens = static_cast<std::uint32_t>(std::max<std::int64_t>(r->cached_tokens, 0)),
        .num_output_tokens = num_output};
    if (out.first_token) {
      counters_.prompt_tokens_total += r->num_prompt;
      counters_.prompt_tokens_cached_total += out.cached_tokens;
    }
    ++counters_.generation_tokens_total;
    // vLLM's check_stop: length first, then (past min_tokens) stop token ids.
    if (num_output >= r->max_tokens || r->num_tokens() >= config_.max_model_len) {
      out.finish_reason = FinishReason::kLength;
    } else if (num_output >= r->min_tokens &&
               std::find(r->stop_token_ids.begin(), r->stop_token_ids.end(), token) !=
                   r->stop_token_ids.end()) {
      out.finish_reason = FinishReason::kStop;
    }
    if (out.finish_reason != FinishReason::kNone) {
      out.finished = true;
      any_finished = true;
      if (out.finish_reason == FinishReason::kStop) {
        ++counters_.request_success_stop_total;
      } else {
        ++counters_.request_success_length_total;
      }
      finish(r);
    }
    res.outputs.push_back(out);
  }
  if (any_finished) {
    std::erase_if(running_, [](const Request* r) { return !r->running; });
    for (const RequestOutput& out : res.outputs) {
      if (out.finished) requests_.erase(out.request_id);
    }
  }
  if (!scheduled_.empty()) {
    ++counters_.num_steps_total;
    counters_.iteration_tokens_sum += res.num_scheduled_tokens;
  }
  scheduled_.clear();
  if (config_.cost && res.num_scheduled_tokens > 0) {
    res.duration_s = config_.cost->step_seconds(res.shape);
  }
  return res;
}

bool Engine::reset_prefix_cache() {
  if (!running_.empty()) return false;
  return pool_.reset_prefix_cache();
}

EngineStats Engine::stats() const {
  EngineStats s = counters_;
  s.num_requests_running = static_cast<std::uint32_t>(running_.size());
  s.num_requests_waiting = static_cast<std::uint32_t>(waiting_.size());
  s.num_used_blocks = pool_.num_blocks() - pool_.num_free();
  s.kv_cache_usage_perc =
      static_cast<double>(s.num_used_blocks) / static_cast<double>(pool_.num_blocks());
  s.num_cached_blocks = pool_.num_cached();
  return s;
}

bool Engine::check_invariants_for_test() const {
  if (!pool_.check_invariants()) return false;
  std::vector<std::uint32_t> refs(pool_.num_blocks(), 0);
  for (const Request* r : running_) {
    if (!r->running) return false;
    if (r->blocks.size() != ceil_div(r->num_computed, config_.block_size)) return false;
    for (std::uint32_t b : r->blocks) ++refs[b];
  }
  for (const Request* r : waiting_) {
    if (r->running || !r->blocks.empty() || r->num_computed != 0) return false;
  }
  for (std::uint32_t b = 0; b < pool_.num_blocks(); ++b) {
    if (refs[b] != pool_.ref_count(b)) return false;
  }
  return requests_.size() == running_.size() + waiting_.size();
}

}  // namespace kvroute::sim
