// File: bench/internal/workload.h
//
// Benchmark workloads for `kvroute bench`: deterministic (from a seed) lists of sessions, each a
// chain of requests. Prompts are made of synthetic words, so that the simulator's word tokenizer
// (prompt::word_tokens: one token per whitespace-separated word) gives exact token counts and the
// block hashes every engine will compute can be predicted offline (bench/internal/bounds.h).
//
//  - shared-prefix: SGLang's "generated-shared-prefix": G groups, P prompts per group; a prompt is
//    the group's system prompt followed by a unique question; all prompts shuffled.
//  - multi-turn: S chat sessions of T turns; turn t carries the whole history (a shared system
//    prompt, the earlier user messages and synthetic assistant answers of output_len words) plus
//    a new user message; the next turn is sent after the previous answer plus a think time.
//  - long-doc-qa: D long documents, Q questions per document; prompt = document + question.
//  - mooncake: replay of a Mooncake trace (JSONL: timestamp ms, input_length, output_length,
//    hash_ids of 512-token blocks); each hash id maps to 512 deterministic words, so equal ids give
//    equal prefixes. Traces carry no session ids: a request whose hash ids start with all the full
//    blocks of an earlier request continues that request's conversation (the latest such, the
//    longest match) and gets its session id, so session affinity sees the trace's conversations.
//    Every request stays its own Session (arrival at its own timestamp).
//  - mix: shared-prefix and multi-turn sessions interleaved.
//
// Text is rendered lazily (a request's prompt is only materialized when it is sent or its tokens
// are needed), so a long trace does not hold gigabytes of prompts.
//
// Thread-safety: value types, not synchronized; the generators and renderers are pure functions.
// A built Workload is only read, so several load generators may share one (bench compare
// --simultaneous runs one per thread). An Rng belongs to one thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace kvroute::bench {

// `count` words of the deterministic word stream `stream`, starting at word `offset`.
struct Segment {
  std::uint64_t stream = 0;
  std::uint32_t offset = 0;
  std::uint32_t count = 0;
};

struct Message {
  std::string role;  // "system", "user", "assistant"
  std::vector<Segment> content;
};

// One request.
struct Item {
  bool chat = false;              // /v1/chat/completions (messages) or /v1/completions (prompt)
  std::vector<Segment> prompt;    // completions
  std::vector<Message> messages;  // chat
  std::uint32_t max_tokens = 16;
  double think_s = 0;  // wait after the previous turn's answer before sending this one
};

// A chain of requests sent one after the other (a single request for most workloads).
struct Session {
  std::string id;    // sent as the session header
  double at_s = -1;  // trace arrival time (seconds from the start, before --speed); -1: none
  std::vector<Item> turns;
  // Traffic class (--class): its name, reported per class, and the headers every turn carries
  // (e.g. x-gateway-inference-objective, x-gateway-inference-fairness-id). Empty: no class.
  std::string cls;
  std::vector<std::pair<std::string, std::string>> headers;
};

// `--class NAME:SHARE[:HEADER=VALUE[,HEADER=VALUE...]]`: a share of the sessions (shares are
// relative weights) that carry these headers, e.g. a priority band's objective or a tenant's
// fairness id. Open-loop arrivals stay one Poisson process; each session is of class c with
// probability share_c / sum of shares, so each class is a Poisson process of its share of the rate.
struct TrafficClass {
  std::string name;
  double share = 1;
  std::vector<std::pair<std::string, std::string>> headers;
};
Result<TrafficClass> parse_traffic_class(std::string_view spec);

struct Workload {
  std::string name;
  std::vector<Session> sessions;
  bool timestamps = false;  // sessions carry trace arrival times
  std::size_t num_requests() const;
};

// Assigns every session a class (deterministic from `seed`; classes empty: no change).
void assign_classes(Workload& wl, const std::vector<TrafficClass>& classes, std::uint64_t seed);
// Redraws every request's max_tokens from `dist` with mean `mean` (see output_len_dist).
Status vary_output_lengths(Workload& wl, std::string_view dist, std::uint32_t mean,
                           std::uint64_t seed);

struct WorkloadOptions {
  std::string name = "shared-prefix";  // shared-prefix, multi-turn, long-doc-qa, mooncake, mix
  std::uint64_t seed = 1;
  std::uint32_t output_len = 32;
  // shared-prefix
  std::uint32_t sp_groups = 16;
  std::uint32_t sp_prompts_per_group = 16;
  std::uint32_t sp_system_len = 1024;
  std::uint32_t sp_question_len = 64;
  // multi-turn
  std::uint32_t mt_sessions = 32;
  std::uint32_t mt_turns = 4;
  std::uint32_t mt_turn_len = 128;
  std::uint32_t mt_system_len = 256;  // shared by all sessions (0: none)
  double mt_think_s = 1.0;            // mean of an exponential think time (0: none)
  // long-doc-qa
  std::uint32_t ld_docs = 8;
  std::uint32_t ld_doc_len = 4096;
  std::uint32_t ld_questions = 8;
  std::uint32_t ld_question_len = 32;
  // mooncake
  std::string trace_path;
  std::uint32_t trace_block = 512;     // tokens per hash id
  std::size_t trace_limit = 0;         // first N lines only (0: all)
  std::uint32_t trace_output_len = 0;  // > 0: replaces every record's output_length
  // Traffic classes (make_workload assigns them; empty: none).
  std::vector<TrafficClass> classes;
  // Output lengths (max_tokens, ignore_eos) of the built-in workloads: "fixed" (output_len), or
  // drawn per request with mean output_len: "uniform" (1 to 2 x output_len - 1) or "exponential"
  // (at least 1, at most 8 x output_len). Fixed lengths make a full engine's requests finish in
  // waves; real traffic frees slots continuously. The Mooncake trace keeps its own lengths.
  std::string output_len_dist = "fixed";
};

std::vector<std::string> workload_names();

// Builds the named workload. Errors: unknown name, unreadable or malformed trace (names the line).
Result<Workload> make_workload(const WorkloadOptions& o);
Result<Workload> make_shared_prefix(const WorkloadOptions& o);
Result<Workload> make_multi_turn(const WorkloadOptions& o);
Result<Workload> make_long_doc_qa(const WorkloadOptions& o);
Result<Workload> make_mix(const WorkloadOptions& o);

// Mooncake trace. One parsed line.
struct TraceRecord {
  std::uint64_t timestamp_ms = 0;
  std::uint32_t input_length = 0;
  std::uint32_t output_length = 0;
  std::vector<std::uint64_t> hash_ids;
};
Result<std::vector<TraceRecord>> parse_mooncake(std::string_view jsonl, std::size_t limit = 0);
// `output_len` > 0 replaces the records' output lengths.
Workload mooncake_workload(const std::vector<TraceRecord>& records, std::uint32_t block_tokens,
                           std::uint32_t output_len = 0);
// For each record, the index of the first record of its conversation (itself when it starts one):
// record j continues the latest earlier record i whose full blocks (input_length / block_tokens
// hash ids, at least one) are a proper prefix of j's hash ids, the longest such prefix winning.
std::vector<std::size_t> mooncake_conversations(const std::vector<TraceRecord>& records,
                                                std::uint32_t block_tokens);

// The word stream: word `index` of stream `stream` (lowercase letters, no spaces).
std::string synth_word(std::uint64_t stream, std::uint32_t index);
// Stream id of a Mooncake hash id (all 512 words of a block come from it).
std::uint64_t mooncake_stream(std::uint64_t hash_id);

// Text of segments: the words separated by single spaces.
std::string render_segments(const std::vector<Segment>& segs);
// The completions prompt, or the chat messages' contents rendered.
std::string render_prompt(const Item& item);
// The JSON request body (streaming with usage).
std::string request_body(const Item& item, std::string_view model);
// The prompt token ids the simulator's word tokenizer computes for this request (chat: rendered
// as "<|role|>\ncontent\n" per message then "<|assistant|>\n", as prompt::PromptEncoder does).
std::vector<std::uint32_t> predicted_tokens(const Item& item, std::uint32_t vocab_size = 128256);

// Deterministic random numbers (SplitMix64): the same sequence on every platform.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : s_(seed) {}
  std::uint64_t next();
  double uniform();                      // [0, 1)
  std::uint64_t below(std::uint64_t n);  // [0, n)
  double exponential(double mean);

 private:
  std::uint64_t s_;
};

}  // namespace kvroute::bench
