// File: chat_template/internal/ast.h
//
// Node: the parsed form of a chat template (internal). One struct serves expressions and
// statements; the fields each kind uses are listed beside NodeKind. A tree is immutable after
// parsing and shared by every copy of a ChatTemplate.
//
// Thread-safety: immutable after parse(), safe to read from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "chat_template/internal/value.h"
#include "common/result.h"

namespace kvroute::chat_template {

enum class NodeKind : std::uint8_t {
  // Expressions
  kLiteral,   // literal
  kName,      // name
  kGetAttr,   // a . name
  kGetItem,   // a [ b ]
  kSlice,     // a [ b : c : d ]   (b, c, d may be null)
  kCall,      // a ( args )        a is kName (global/macro) or kGetAttr (method)
  kFilter,    // a | name(args)    op = filter id
  kTest,      // a is [not] name(args)   op = test id, negated
  kNot,       // not a
  kNeg,       // - a
  kPos,       // + a
  kBinary,    // a op b
  kAnd,       // a and b
  kOr,        // a or b
  kCompare,   // a ops[0] list[0] ops[1] list[1] ...
  kCondExpr,  // b if a else c   (c may be null)
  kList,      // [ list ]
  kTuple,     // ( list )
  kDict,      // { list[0]: list[1], ... }
  // Statements
  kBody,      // list of statements
  kText,      // literal.str
  kOutput,    // {{ a }}
  kIf,        // list = cond, body, cond, body, ...; d = else body (may be null)
  kFor,       // names = targets; a = iterable; b = filter (may be null); c = body; d = else
  kSet,       // names = targets; a = value
  kNsSet,     // name = namespace variable, attr = attribute; a = value
  kSetBlock,  // names[0] = target; c = body
  kMacro,     // name; names = params; args = defaults (null: none); c = body
  kBreak,
  kContinue,
};

enum class BinOp : std::uint8_t { kAdd, kSub, kMul, kDiv, kFloorDiv, kMod, kPow, kConcat };
enum class CmpOp : std::uint8_t { kEq, kNe, kLt, kLe, kGt, kGe, kIn, kNotIn };

struct Node {
  NodeKind kind = NodeKind::kLiteral;
  int line = 1;
  int op = 0;
  bool negated = false;
  Value literal;
  std::string name;
  std::string attr;
  std::unique_ptr<Node> a, b, c, d;
  std::vector<std::unique_ptr<Node>> list;
  std::vector<std::string> names;
  std::vector<std::unique_ptr<Node>> args;  // call / filter / test arguments
  std::vector<std::string> arg_names;       // parallel to args; empty = positional
  std::vector<CmpOp> ops;
};

// Builtin filters and tests (Node::op of kFilter / kTest).
enum class FilterId : std::uint8_t {
  kTrim,
  kToJson,
  kLength,
  kUpper,
  kLower,
  kTitle,
  kCapitalize,
  kDefault,
  kFirst,
  kLast,
  kJoin,
  kMap,
  kSelectAttr,
  kRejectAttr,
  kSelect,
  kReject,
  kList,
  kString,
  kInt,
  kFloat,
  kReplace,
  kItems,
  kSafe,
  kIndent,
  kAbs,
  kRound,
  kUnique,
  kSort,
  kDictSort,
  kBatch,
  kWordCount,
  kCenter,
  kEscape,
  kSum,
  kMax,
  kMin,
  kReverse,
};
enum class TestId : std::uint8_t {
  kDefined,
  kUndefined,
  kNone,
  kString,
  kMapping,
  kIterable,
  kSequence,
  kNumber,
  kInteger,
  kFloat,
  kBoolean,
  kTrue,
  kFalse,
  kEq,
  kNe,
  kLt,
  kLe,
  kGt,
  kGe,
  kIn,
  kOdd,
  kEven,
  kDivisibleBy,
  kCallable,
  kLower,
  kUpper,
  kSameAs,
};

struct ParseLimits {
  std::size_t max_depth = 256;
  std::size_t max_bytes = 4u << 20;
};

// Parses a template (HF settings: trim_blocks, lstrip_blocks, no trailing newline kept).
Result<std::unique_ptr<Node>> parse_template(std::string_view source, const ParseLimits& limits);

}  // namespace kvroute::chat_template
