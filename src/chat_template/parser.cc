// Lexer and parser of the Jinja2 subset used by chat templates. The token rules follow Jinja2's
// lexer with trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False; the grammar follows
// Jinja2's parser (precedence: condexpr < or < and < not < compare < +- < ~ < */ //% < ** < unary,
// with filters and tests binding to the unary operand).
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "chat_template/internal/ast.h"

namespace kvroute::chat_template {
namespace {

struct ParseError {
  std::string message;
  int line;
};

enum class Tok : std::uint8_t {
  kData,
  kVarBegin,
  kVarEnd,
  kBlockBegin,
  kBlockEnd,
  kName,
  kString,
  kInt,
  kFloat,
  kOp,
  kEof
};

struct Token {
  Tok type = Tok::kEof;
  std::string text;
  int line = 1;
  std::int64_t ival = 0;
  double fval = 0;
};

bool is_space_at(std::string_view s, std::size_t pos, std::size_t& next) {
  std::size_t p = pos;
  std::uint32_t cp = utf8_next(s, p);
  if (is_py_space(cp)) {
    next = p;
    return true;
  }
  return false;
}

std::size_t skip_spaces(std::string_view s, std::size_t pos) {
  std::size_t next = pos;
  while (pos < s.size() && is_space_at(s, pos, next)) pos = next;
  return pos;
}

// Python str.rstrip() on UTF-8.
std::string_view rstrip_ws(std::string_view s) {
  std::string r = py_strip(s, nullptr, false, true);
  return s.substr(0, r.size());
}

// True when s is non-empty and only whitespace (Python re \s+ fullmatch).
bool all_space(std::string_view s) {
  if (s.empty()) return false;
  std::size_t pos = 0;
  std::size_t next = 0;
  while (pos < s.size()) {
    if (!is_space_at(s, pos, next)) return false;
    pos = next;
  }
  return true;
}

std::string unescape(std::string_view body, int line) {
  std::string out;
  for (std::size_t k = 0; k < body.size(); ++k) {
    char c = body[k];
    if (c != '\\' || k + 1 >= body.size()) {
      out += c;
      continue;
    }
    char e = body[++k];
    auto hex = [&](int n) -> std::uint32_t {
      std::uint32_t v = 0;
      for (int j = 1; j <= n; ++j) {
        if (k + static_cast<std::size_t>(j) >= body.size())
          throw ParseError{"truncated escape in string literal", line};
        char h = body[k + static_cast<std::size_t>(j)];
        int d = (h >= '0' && h <= '9')   ? h - '0'
                : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                         : -1;
        if (d < 0) throw ParseError{"invalid escape in string literal", line};
        v = v * 16 + static_cast<std::uint32_t>(d);
      }
      k += static_cast<std::size_t>(n);
      return v;
    };
    auto put_cp = [&](std::uint32_t cp) {
      if (cp > 0x10FFFF) throw ParseError{"invalid escape in string literal", line};
      if (cp < 0x80) {
        out += static_cast<char>(cp);
      } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      }
    };
    switch (e) {
      case '\n':
        break;
      case '\\':
        out += '\\';
        break;
      case '\'':
        out += '\'';
        break;
      case '"':
        out += '"';
        break;
      case 'a':
        out += '\a';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'v':
        out += '\v';
        break;
      case 'x':
        put_cp(hex(2));
        break;
      case 'u':
        put_cp(hex(4));
        break;
      case 'U':
        put_cp(hex(8));
        break;
      default:
        if (e >= '0' && e <= '7') {
          std::uint32_t v = static_cast<std::uint32_t>(e - '0');
          for (int j = 0; j < 2 && k + 1 < body.size() && body[k + 1] >= '0' && body[k + 1] <= '7';
               ++j) {
            v = v * 8 + static_cast<std::uint32_t>(body[++k] - '0');
          }
          put_cp(v);
        } else {
          out += '\\';
          out += e;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string src) : src_(std::move(src)) {
    for (std::size_t k = 0; k < src_.size(); ++k) {
      if (src_[k] == '\n') newlines_.push_back(k);
    }
  }

  std::vector<Token> run() {
    std::size_t pos = 0;
    bool line_starting = true;
    const std::size_t n = src_.size();
    while (pos < n) {
      std::size_t p = pos;
      while (true) {
        p = src_.find('{', p);
        if (p == std::string::npos || p + 1 >= n) {
          p = std::string::npos;
          break;
        }
        char c = src_[p + 1];
        if (c == '{' || c == '%' || c == '#') break;
        ++p;
      }
      if (p == std::string::npos) {
        emit_data(std::string_view(src_).substr(pos), pos);
        break;
      }
      std::string_view text = std::string_view(src_).substr(pos, p - pos);
      char opener = src_[p + 1];
      std::size_t q = p + 2;
      char sign = 0;
      if (q < n && (src_[q] == '-' || src_[q] == '+')) sign = src_[q++];
      // {% raw %} ... {% endraw %}
      std::size_t raw_end = 0;
      bool is_raw = opener == '%' && match_raw_tag(q, "raw", raw_end, /*trim=*/false);
      text = strip_before(text, sign, opener != '{', line_starting);
      emit_data(text, pos);
      if (opener == '#') {
        std::size_t j = src_.find("#}", q);
        if (j == std::string::npos) throw ParseError{"missing end of comment tag", line_of(p)};
        char end_sign = (j > q && (src_[j - 1] == '-' || src_[j - 1] == '+')) ? src_[j - 1] : 0;
        pos = after_end(j + 2, end_sign, /*trim=*/true);
        line_starting = src_[pos - 1] == '\n';
        continue;
      }
      if (is_raw) {
        // Find {%(-|+|)\s*endraw\s*(+%}|-%}\s*|%}\n?)
        std::size_t k = raw_end;
        bool found = false;
        bool raw_line_starting = src_[raw_end - 1] == '\n';
        while ((k = src_.find("{%", k)) != std::string::npos) {
          std::size_t r = k + 2;
          char s2 = 0;
          if (r < n && (src_[r] == '-' || src_[r] == '+')) s2 = src_[r++];
          std::size_t end_pos = 0;
          if (match_raw_tag(r, "endraw", end_pos, /*trim=*/true)) {
            std::string_view body = std::string_view(src_).substr(raw_end, k - raw_end);
            body = strip_before(body, s2, true, raw_line_starting);
            emit_data(body, raw_end);
            pos = end_pos;
            line_starting = src_[pos - 1] == '\n';
            found = true;
            break;
          }
          k += 2;
        }
        if (!found) throw ParseError{"missing end of raw directive", line_of(p)};
        continue;
      }
      bool block = opener == '%';
      tokens_.push_back(Token{block ? Tok::kBlockBegin : Tok::kVarBegin, "", line_of(p), 0, 0});
      pos = lex_tag(q, block);
      line_starting = src_[pos - 1] == '\n';
    }
    tokens_.push_back(Token{Tok::kEof, "", line_of(n), 0, 0});
    return std::move(tokens_);
  }

  int line_of(std::size_t pos) const {
    return static_cast<int>(std::lower_bound(newlines_.begin(), newlines_.end(), pos) -
                            newlines_.begin()) +
           1;
  }

 private:
  std::string_view strip_before(std::string_view text, char sign, bool lstrip_kind,
                                bool line_starting) {
    if (sign == '-') return rstrip_ws(text);
    if (sign != '+' && lstrip_kind) {
      std::size_t nl = text.rfind('\n');
      std::size_t l_pos = nl == std::string_view::npos ? 0 : nl + 1;
      if ((l_pos > 0 || line_starting) && all_space(text.substr(l_pos)))
        return text.substr(0, l_pos);
    }
    return text;
  }

  void emit_data(std::string_view text, std::size_t at) {
    if (text.empty()) return;
    tokens_.push_back(Token{Tok::kData, std::string(text), line_of(at), 0, 0});
  }

  // Position after a block/comment end whose closing chars end before `after`.
  std::size_t after_end(std::size_t after, char end_sign, bool trim) {
    if (end_sign == '-') return skip_spaces(src_, after);
    if (end_sign != '+' && trim && after < src_.size() && src_[after] == '\n') return after + 1;
    return after;
  }

  // Matches \s*WORD\s*(-%}\s*|%}) (trim=false, raw) or (+%}|-%}\s*|%}\n?) (trim=true, endraw).
  bool match_raw_tag(std::size_t q, std::string_view word, std::size_t& end, bool trim) {
    std::size_t k = skip_spaces(src_, q);
    if (src_.compare(k, word.size(), word) != 0) return false;
    k = skip_spaces(src_, k + word.size());
    if (src_.compare(k, 3, "-%}") == 0) {
      end = skip_spaces(src_, k + 3);
      return true;
    }
    if (trim && src_.compare(k, 3, "+%}") == 0) {
      end = k + 3;
      return true;
    }
    if (src_.compare(k, 2, "%}") == 0) {
      end = k + 2;
      if (trim && end < src_.size() && src_[end] == '\n') ++end;
      return true;
    }
    return false;
  }

  std::size_t lex_tag(std::size_t pos, bool block) {
    const std::size_t n = src_.size();
    std::vector<char> balance;
    while (true) {
      pos = skip_spaces(src_, pos);
      if (pos >= n)
        throw ParseError{block ? "unexpected end of template, expected '%}'"
                               : "unexpected end of template, expected '}}'",
                         line_of(n)};
      int line = line_of(pos);
      if (balance.empty()) {
        if (block) {
          if (src_.compare(pos, 3, "+%}") == 0) {
            tokens_.push_back(Token{Tok::kBlockEnd, "", line, 0, 0});
            return pos + 3;
          }
          if (src_.compare(pos, 3, "-%}") == 0) {
            tokens_.push_back(Token{Tok::kBlockEnd, "", line, 0, 0});
            return after_end(pos + 3, '-', true);
          }
          if (src_.compare(pos, 2, "%}") == 0) {
            tokens_.push_back(Token{Tok::kBlockEnd, "", line, 0, 0});
            return after_end(pos + 2, 0, true);
          }
        } else {
          if (src_.compare(pos, 3, "-}}") == 0) {
            tokens_.push_back(Token{Tok::kVarEnd, "", line, 0, 0});
            return after_end(pos + 3, '-', false);
          }
          if (src_.compare(pos, 2, "}}") == 0) {
            tokens_.push_back(Token{Tok::kVarEnd, "", line, 0, 0});
            return pos + 2;
          }
        }
      }
      char c = src_[pos];
      if (c >= '0' && c <= '9') {
        std::size_t k = pos;
        while (k < n && (std::isdigit(static_cast<unsigned char>(src_[k])) || src_[k] == '_')) ++k;
        bool is_float = false;
        if (k + 1 < n && src_[k] == '.' && std::isdigit(static_cast<unsigned char>(src_[k + 1]))) {
          is_float = true;
          ++k;
          while (k < n && std::isdigit(static_cast<unsigned char>(src_[k]))) ++k;
        }
        if (k < n && src_[k] == 'e') {
          std::size_t e = k + 1;
          if (e < n && (src_[e] == '+' || src_[e] == '-')) ++e;
          if (e < n && std::isdigit(static_cast<unsigned char>(src_[e]))) {
            is_float = true;
            k = e;
            while (k < n && std::isdigit(static_cast<unsigned char>(src_[k]))) ++k;
          }
        }
        std::string lit;
        for (std::size_t j = pos; j < k; ++j) {
          if (src_[j] != '_') lit += src_[j];
        }
        Token t{is_float ? Tok::kFloat : Tok::kInt, lit, line, 0, 0};
        if (is_float) {
          t.fval = std::strtod(lit.c_str(), nullptr);
        } else {
          errno = 0;
          t.ival = std::strtoll(lit.c_str(), nullptr, 10);
          if (errno == ERANGE) throw ParseError{"integer literal out of range", line};
        }
        tokens_.push_back(std::move(t));
        pos = k;
        continue;
      }
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        std::size_t k = pos;
        while (k < n && (std::isalnum(static_cast<unsigned char>(src_[k])) || src_[k] == '_')) ++k;
        tokens_.push_back(Token{Tok::kName, src_.substr(pos, k - pos), line, 0, 0});
        pos = k;
        continue;
      }
      if (c == '\'' || c == '"') {
        std::size_t k = pos + 1;
        while (k < n && src_[k] != c) {
          if (src_[k] == '\\') ++k;
          ++k;
        }
        if (k >= n) throw ParseError{"unterminated string literal", line};
        tokens_.push_back(Token{Tok::kString,
                                unescape(std::string_view(src_).substr(pos + 1, k - pos - 1), line),
                                line, 0, 0});
        pos = k + 1;
        continue;
      }
      static const char* const kOps2[] = {"//", "**", "==", "!=", ">=", "<="};
      std::string op;
      for (const char* o : kOps2) {
        if (src_.compare(pos, 2, o) == 0) op = o;
      }
      if (op.empty()) {
        static const std::string_view kOps1 = "+-/*%~[](){}<>=.:|,;";
        if (kOps1.find(c) == std::string_view::npos) {
          throw ParseError{std::string("unexpected char '") + c + "'", line};
        }
        op = std::string(1, c);
        if (c == '(' || c == '[' || c == '{') {
          balance.push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
        } else if (c == ')' || c == ']' || c == '}') {
          if (balance.empty()) throw ParseError{std::string("unexpected '") + c + "'", line};
          if (balance.back() != c) {
            throw ParseError{
                std::string("unexpected '") + c + "', expected '" + balance.back() + "'", line};
          }
          balance.pop_back();
        }
      }
      tokens_.push_back(Token{Tok::kOp, op, line, 0, 0});
      pos += op.size();
    }
  }

  std::string src_;
  std::vector<std::size_t> newlines_;
  std::vector<Token> tokens_;
};

const std::unordered_map<std::string_view, FilterId>& filter_table() {
  static const std::unordered_map<std::string_view, FilterId> kTable = {
      {"trim", FilterId::kTrim},
      {"tojson", FilterId::kToJson},
      {"length", FilterId::kLength},
      {"count", FilterId::kLength},
      {"upper", FilterId::kUpper},
      {"lower", FilterId::kLower},
      {"title", FilterId::kTitle},
      {"capitalize", FilterId::kCapitalize},
      {"default", FilterId::kDefault},
      {"d", FilterId::kDefault},
      {"first", FilterId::kFirst},
      {"last", FilterId::kLast},
      {"join", FilterId::kJoin},
      {"map", FilterId::kMap},
      {"selectattr", FilterId::kSelectAttr},
      {"rejectattr", FilterId::kRejectAttr},
      {"select", FilterId::kSelect},
      {"reject", FilterId::kReject},
      {"list", FilterId::kList},
      {"string", FilterId::kString},
      {"int", FilterId::kInt},
      {"float", FilterId::kFloat},
      {"replace", FilterId::kReplace},
      {"items", FilterId::kItems},
      {"safe", FilterId::kSafe},
      {"indent", FilterId::kIndent},
      {"abs", FilterId::kAbs},
      {"unique", FilterId::kUnique},
      {"reverse", FilterId::kReverse},
      {"sum", FilterId::kSum},
      {"max", FilterId::kMax},
      {"min", FilterId::kMin},
      {"wordcount", FilterId::kWordCount},
  };
  return kTable;
}

}  // namespace

const std::unordered_map<std::string_view, TestId>& test_table() {
  static const std::unordered_map<std::string_view, TestId> kTable = {
      {"defined", TestId::kDefined},
      {"undefined", TestId::kUndefined},
      {"none", TestId::kNone},
      {"string", TestId::kString},
      {"mapping", TestId::kMapping},
      {"iterable", TestId::kIterable},
      {"sequence", TestId::kSequence},
      {"number", TestId::kNumber},
      {"integer", TestId::kInteger},
      {"float", TestId::kFloat},
      {"boolean", TestId::kBoolean},
      {"true", TestId::kTrue},
      {"false", TestId::kFalse},
      {"equalto", TestId::kEq},
      {"eq", TestId::kEq},
      {"==", TestId::kEq},
      {"ne", TestId::kNe},
      {"!=", TestId::kNe},
      {"lt", TestId::kLt},
      {"lessthan", TestId::kLt},
      {"<", TestId::kLt},
      {"le", TestId::kLe},
      {"<=", TestId::kLe},
      {"gt", TestId::kGt},
      {"greaterthan", TestId::kGt},
      {">", TestId::kGt},
      {"ge", TestId::kGe},
      {">=", TestId::kGe},
      {"in", TestId::kIn},
      {"odd", TestId::kOdd},
      {"even", TestId::kEven},
      {"divisibleby", TestId::kDivisibleBy},
      {"callable", TestId::kCallable},
      {"lower", TestId::kLower},
      {"upper", TestId::kUpper},
      {"sameas", TestId::kSameAs},
  };
  return kTable;
}

const std::unordered_set<std::string_view>& global_functions() {
  static const std::unordered_set<std::string_view> kSet = {"range", "namespace", "raise_exception",
                                                            "strftime_now", "dict"};
  return kSet;
}

const std::unordered_set<std::string_view>& method_names() {
  static const std::unordered_set<std::string_view> kSet = {
      "strip",   "lstrip",  "rstrip",  "split",      "rsplit",  "startswith", "endswith",
      "upper",   "lower",   "title",   "capitalize", "replace", "find",       "count",
      "join",    "items",   "keys",    "values",     "get",     "splitlines", "isdigit",
      "isalpha", "isalnum", "isspace", "islower",    "isupper", "cycle"};
  return kSet;
}

namespace {

class Parser {
 public:
  Parser(std::vector<Token> tokens, const ParseLimits& limits)
      : toks_(std::move(tokens)), limits_(limits) {}

  std::unique_ptr<Node> parse_root() {
    auto body = subparse({});
    if (cur().type != Tok::kEof) fail("unexpected tag", cur().line);
    for (const auto& [name, line] : called_names_) {
      if (!global_functions().contains(name) && !macro_names_.contains(name)) {
        fail("unsupported function '" + name + "'", line);
      }
    }
    return body;
  }

 private:
  struct DepthGuard {
    explicit DepthGuard(Parser& p) : parser(p) {
      if (++parser.depth_ > parser.limits_.max_depth) {
        throw ParseError{"template nesting exceeds the recursion limit", parser.cur().line};
      }
    }
    ~DepthGuard() { --parser.depth_; }
    Parser& parser;
  };

  [[noreturn]] static void fail(std::string msg, int line) {
    throw ParseError{std::move(msg), line};
  }

  const Token& cur() const { return toks_[idx_]; }
  const Token& peek(std::size_t k = 1) const { return toks_[std::min(idx_ + k, toks_.size() - 1)]; }
  void advance() {
    if (idx_ + 1 < toks_.size()) ++idx_;
  }
  bool is_op(std::string_view op) const { return cur().type == Tok::kOp && cur().text == op; }
  bool is_name(std::string_view n) const { return cur().type == Tok::kName && cur().text == n; }
  bool skip_op(std::string_view op) {
    if (!is_op(op)) return false;
    advance();
    return true;
  }
  bool skip_name(std::string_view n) {
    if (!is_name(n)) return false;
    advance();
    return true;
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::kEof:
        return "end of template";
      case Tok::kBlockEnd:
        return "end of statement block";
      case Tok::kVarEnd:
        return "end of print statement";
      case Tok::kData:
        return "template data";
      default:
        return "'" + t.text + "'";
    }
  }
  void expect_op(std::string_view op) {
    if (!skip_op(op))
      fail("expected '" + std::string(op) + "', got " + describe(cur()), cur().line);
  }
  std::string expect_name() {
    if (cur().type != Tok::kName) fail("expected a name, got " + describe(cur()), cur().line);
    std::string n = cur().text;
    advance();
    return n;
  }
  void expect_block_end() {
    if (cur().type != Tok::kBlockEnd)
      fail("expected end of statement block, got " + describe(cur()), cur().line);
    advance();
  }

  static std::unique_ptr<Node> make(NodeKind kind, int line) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    n->line = line;
    return n;
  }

  // Parses nodes until a block tag named in `ends` (left unconsumed: cur() is its name token).
  std::unique_ptr<Node> subparse(std::initializer_list<std::string_view> ends) {
    DepthGuard guard(*this);
    auto body = make(NodeKind::kBody, cur().line);
    while (true) {
      const Token& t = cur();
      if (t.type == Tok::kEof) {
        if (ends.size() != 0)
          fail("unexpected end of template, expected '" + std::string(*ends.begin()) + "'", t.line);
        return body;
      }
      if (t.type == Tok::kData) {
        auto n = make(NodeKind::kText, t.line);
        n->literal = Value::string(t.text);
        body->list.push_back(std::move(n));
        advance();
        continue;
      }
      if (t.type == Tok::kVarBegin) {
        advance();
        auto n = make(NodeKind::kOutput, t.line);
        n->a = parse_tuple(true, {});
        if (cur().type != Tok::kVarEnd)
          fail("expected end of print statement, got " + describe(cur()), cur().line);
        advance();
        body->list.push_back(std::move(n));
        continue;
      }
      if (t.type == Tok::kBlockBegin) {
        const Token& name = peek();
        if (name.type != Tok::kName) fail("tag name expected", name.line);
        for (std::string_view e : ends) {
          if (name.text == e) {
            advance();
            return body;
          }
        }
        advance();
        body->list.push_back(parse_statement());
        continue;
      }
      fail("unexpected " + describe(t), t.line);
    }
  }

  std::unique_ptr<Node> parse_statement() {
    const Token t = cur();
    const std::string& tag = t.text;
    if (tag == "if") return parse_if();
    if (tag == "for") return parse_for();
    if (tag == "set") return parse_set();
    if (tag == "macro") return parse_macro();
    if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) fail("'" + tag + "' outside of a loop", t.line);
      advance();
      expect_block_end();
      return make(tag == "break" ? NodeKind::kBreak : NodeKind::kContinue, t.line);
    }
    static const std::unordered_set<std::string_view> kKnown = {
        "elif", "else", "endif", "endfor", "endset", "endmacro", "endraw"};
    if (kKnown.contains(tag)) fail("unexpected tag '" + tag + "'", t.line);
    fail("unsupported tag '" + tag + "'", t.line);
  }

  std::unique_ptr<Node> parse_if() {
    auto node = make(NodeKind::kIf, cur().line);
    advance();  // if
    while (true) {
      node->list.push_back(parse_tuple(false, {}));
      expect_block_end();
      node->list.push_back(subparse({"elif", "else", "endif"}));
      if (skip_name("elif")) continue;
      if (skip_name("else")) {
        expect_block_end();
        node->d = subparse({"endif"});
        advance();  // endif
        break;
      }
      advance();  // endif
      break;
    }
    expect_block_end();
    return node;
  }

  void parse_targets(std::vector<std::string>& names) {
    bool paren = skip_op("(");
    while (true) {
      names.push_back(expect_name());
      if (!skip_op(",")) break;
      if (paren && is_op(")")) break;
      if (!paren && (is_name("in") || is_op("="))) break;
    }
    if (paren) expect_op(")");
  }

  std::unique_ptr<Node> parse_for() {
    auto node = make(NodeKind::kFor, cur().line);
    advance();  // for
    parse_targets(node->names);
    for (const auto& n : node->names) {
      if (n == "loop") fail("can't assign to special loop variable in for-loop target", node->line);
    }
    if (!skip_name("in")) fail("expected 'in', got " + describe(cur()), cur().line);
    node->a = parse_tuple(false, {"recursive"});
    if (skip_name("if")) node->b = parse_expression(true);
    if (is_name("recursive")) fail("unsupported for-loop modifier 'recursive'", cur().line);
    expect_block_end();
    ++loop_depth_;
    node->c = subparse({"endfor", "else"});
    --loop_depth_;
    if (skip_name("else")) {
      expect_block_end();
      node->d = subparse({"endfor"});
    }
    advance();  // endfor
    expect_block_end();
    return node;
  }

  std::unique_ptr<Node> parse_set() {
    int line = cur().line;
    advance();  // set
    if (cur().type == Tok::kName && peek().type == Tok::kOp && peek().text == ".") {
      auto node = make(NodeKind::kNsSet, line);
      node->name = expect_name();
      advance();  // .
      node->attr = expect_name();
      expect_op("=");
      node->a = parse_tuple(true, {});
      expect_block_end();
      return node;
    }
    std::vector<std::string> names;
    parse_targets(names);
    if (skip_op("=")) {
      auto node = make(NodeKind::kSet, line);
      node->names = std::move(names);
      node->a = parse_tuple(true, {});
      expect_block_end();
      return node;
    }
    if (names.size() != 1) fail("expected '='", cur().line);
    if (is_op("|")) fail("unsupported construct 'filtered block set'", cur().line);
    expect_block_end();
    auto node = make(NodeKind::kSetBlock, line);
    node->names = std::move(names);
    int saved = loop_depth_;
    node->c = subparse({"endset"});
    loop_depth_ = saved;
    advance();  // endset
    expect_block_end();
    return node;
  }

  std::unique_ptr<Node> parse_macro() {
    auto node = make(NodeKind::kMacro, cur().line);
    advance();  // macro
    node->name = expect_name();
    macro_names_.insert(node->name);
    expect_op("(");
    while (!is_op(")")) {
      if (!node->names.empty()) expect_op(",");
      if (is_op(")")) break;
      node->names.push_back(expect_name());
      if (skip_op("=")) {
        node->args.push_back(parse_expression(true));
      } else {
        node->args.push_back(nullptr);
      }
    }
    advance();  // )
    expect_block_end();
    int saved = loop_depth_;
    loop_depth_ = 0;
    node->c = subparse({"endmacro"});
    loop_depth_ = saved;
    advance();                                // endmacro
    if (cur().type == Tok::kName) advance();  // optional macro name after endmacro
    expect_block_end();
    return node;
  }

  bool is_tuple_end(std::initializer_list<std::string_view> extra) const {
    const Token& t = cur();
    if (t.type == Tok::kVarEnd || t.type == Tok::kBlockEnd || t.type == Tok::kEof) return true;
    if (t.type == Tok::kOp && t.text == ")") return true;
    for (auto e : extra) {
      if (t.type == Tok::kName && t.text == e) return true;
    }
    return false;
  }

  std::unique_ptr<Node> parse_tuple(bool with_condexpr,
                                    std::initializer_list<std::string_view> extra,
                                    bool explicit_parens = false) {
    int line = cur().line;
    std::vector<std::unique_ptr<Node>> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra)) break;
      items.push_back(parse_expression(with_condexpr));
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) fail("expected an expression, got " + describe(cur()), cur().line);
    }
    auto node = make(NodeKind::kTuple, line);
    node->list = std::move(items);
    return node;
  }

  std::unique_ptr<Node> parse_expression(bool with_condexpr) {
    DepthGuard guard(*this);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  std::unique_ptr<Node> parse_condexpr() {
    auto expr1 = parse_or();
    while (is_name("if")) {
      int line = cur().line;
      advance();
      auto expr2 = parse_or();
      std::unique_ptr<Node> expr3;
      if (skip_name("else")) expr3 = parse_condexpr();
      auto node = make(NodeKind::kCondExpr, line);
      node->a = std::move(expr2);
      node->b = std::move(expr1);
      node->c = std::move(expr3);
      expr1 = std::move(node);
    }
    return expr1;
  }

  std::unique_ptr<Node> binary(NodeKind kind, std::unique_ptr<Node> l, std::unique_ptr<Node> r,
                               int line, int op = 0) {
    auto node = make(kind, line);
    node->a = std::move(l);
    node->b = std::move(r);
    node->op = op;
    return node;
  }

  std::unique_ptr<Node> parse_or() {
    auto left = parse_and();
    while (is_name("or")) {
      int line = cur().line;
      advance();
      left = binary(NodeKind::kOr, std::move(left), parse_and(), line);
    }
    return left;
  }

  std::unique_ptr<Node> parse_and() {
    auto left = parse_not();
    while (is_name("and")) {
      int line = cur().line;
      advance();
      left = binary(NodeKind::kAnd, std::move(left), parse_not(), line);
    }
    return left;
  }

  std::unique_ptr<Node> parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this);
      auto node = make(NodeKind::kNot, cur().line);
      advance();
      node->a = parse_not();
      return node;
    }
    return parse_compare();
  }

  std::unique_ptr<Node> parse_compare() {
    int line = cur().line;
    auto expr = parse_math1();
    std::unique_ptr<Node> node;
    while (true) {
      CmpOp op;
      if (cur().type == Tok::kOp &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" ||
           cur().text == ">" || cur().text == ">=")) {
        const std::string& t = cur().text;
        op = t == "=="   ? CmpOp::kEq
             : t == "!=" ? CmpOp::kNe
             : t == "<"  ? CmpOp::kLt
             : t == "<=" ? CmpOp::kLe
             : t == ">"  ? CmpOp::kGt
                         : CmpOp::kGe;
        advance();
      } else if (is_name("in")) {
        op = CmpOp::kIn;
        advance();
      } else if (is_name("not") && peek().type == Tok::kName && peek().text == "in") {
        op = CmpOp::kNotIn;
        advance();
        advance();
      } else {
        break;
      }
      if (!node) {
        node = make(NodeKind::kCompare, line);
        node->a = std::move(expr);
      }
      node->ops.push_back(op);
      node->list.push_back(parse_math1());
    }
    return node ? std::move(node) : std::move(expr);
  }

  std::unique_ptr<Node> parse_math1() {
    auto left = parse_concat();
    while (is_op("+") || is_op("-")) {
      BinOp op = cur().text == "+" ? BinOp::kAdd : BinOp::kSub;
      int line = cur().line;
      advance();
      left = binary(NodeKind::kBinary, std::move(left), parse_concat(), line, static_cast<int>(op));
    }
    return left;
  }

  std::unique_ptr<Node> parse_concat() {
    auto left = parse_math2();
    while (is_op("~")) {
      int line = cur().line;
      advance();
      left = binary(NodeKind::kBinary, std::move(left), parse_math2(), line,
                    static_cast<int>(BinOp::kConcat));
    }
    return left;
  }

  std::unique_ptr<Node> parse_math2() {
    auto left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string& t = cur().text;
      BinOp op = t == "*"    ? BinOp::kMul
                 : t == "/"  ? BinOp::kDiv
                 : t == "//" ? BinOp::kFloorDiv
                             : BinOp::kMod;
      int line = cur().line;
      advance();
      left = binary(NodeKind::kBinary, std::move(left), parse_pow(), line, static_cast<int>(op));
    }
    return left;
  }

  std::unique_ptr<Node> parse_pow() {
    auto left = parse_unary(true);
    while (is_op("**")) {
      int line = cur().line;
      advance();
      left = binary(NodeKind::kBinary, std::move(left), parse_unary(true), line,
                    static_cast<int>(BinOp::kPow));
    }
    return left;
  }

  std::unique_ptr<Node> parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    std::unique_ptr<Node> node;
    if (is_op("-") || is_op("+")) {
      node = make(is_op("-") ? NodeKind::kNeg : NodeKind::kPos, cur().line);
      advance();
      node->a = parse_unary(false);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  std::unique_ptr<Node> literal(Value v, int line) {
    auto node = make(NodeKind::kLiteral, line);
    node->literal = std::move(v);
    return node;
  }

  std::unique_ptr<Node> parse_primary() {
    const Token& t = cur();
    int line = t.line;
    switch (t.type) {
      case Tok::kName: {
        std::string n = t.text;
        advance();
        if (n == "true" || n == "True") return literal(Value::boolean(true), line);
        if (n == "false" || n == "False") return literal(Value::boolean(false), line);
        if (n == "none" || n == "None") return literal(Value::none(), line);
        auto node = make(NodeKind::kName, line);
        node->name = std::move(n);
        return node;
      }
      case Tok::kString: {
        std::string s;
        while (cur().type == Tok::kString) {
          s += cur().text;
          advance();
        }
        return literal(Value::string(std::move(s)), line);
      }
      case Tok::kInt: {
        auto v = Value::integer(t.ival);
        advance();
        return literal(std::move(v), line);
      }
      case Tok::kFloat: {
        auto v = Value::floating(t.fval);
        advance();
        return literal(std::move(v), line);
      }
      case Tok::kOp:
        if (t.text == "(") {
          advance();
          auto node = parse_tuple(true, {}, true);
          expect_op(")");
          return node;
        }
        if (t.text == "[") {
          advance();
          auto node = make(NodeKind::kList, line);
          while (!is_op("]")) {
            if (!node->list.empty()) expect_op(",");
            if (is_op("]")) break;
            node->list.push_back(parse_expression(true));
          }
          advance();
          return node;
        }
        if (t.text == "{") {
          advance();
          auto node = make(NodeKind::kDict, line);
          while (!is_op("}")) {
            if (!node->list.empty()) expect_op(",");
            if (is_op("}")) break;
            node->list.push_back(parse_expression(true));
            expect_op(":");
            node->list.push_back(parse_expression(true));
          }
          advance();
          return node;
        }
        break;
      default:
        break;
    }
    fail("unexpected " + describe(t), t.line);
  }

  std::unique_ptr<Node> parse_postfix(std::unique_ptr<Node> node) {
    while (true) {
      if (is_op(".") || is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  std::unique_ptr<Node> parse_filter_expr(std::unique_ptr<Node> node) {
    while (true) {
      if (is_op("|")) {
        node = parse_filter(std::move(node));
      } else if (is_name("is")) {
        node = parse_test(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  std::unique_ptr<Node> parse_subscript(std::unique_ptr<Node> node) {
    int line = cur().line;
    if (skip_op(".")) {
      if (cur().type == Tok::kName) {
        auto n = make(NodeKind::kGetAttr, line);
        n->a = std::move(node);
        n->name = cur().text;
        advance();
        return n;
      }
      if (cur().type == Tok::kInt) {
        auto n = make(NodeKind::kGetItem, line);
        n->a = std::move(node);
        n->b = literal(Value::integer(cur().ival), line);
        advance();
        return n;
      }
      fail("expected name or number after '.'", line);
    }
    advance();  // [
    std::vector<std::unique_ptr<Node>> args;
    while (!is_op("]")) {
      if (!args.empty()) {
        expect_op(",");
        if (is_op("]")) break;
      }
      args.push_back(parse_subscribed());
    }
    advance();  // ]
    if (args.empty()) fail("expected a subscript", line);
    auto n = make(NodeKind::kGetItem, line);
    n->a = std::move(node);
    if (args.size() == 1) {
      n->b = std::move(args[0]);
    } else {
      n->b = make(NodeKind::kTuple, line);
      n->b->list = std::move(args);
    }
    return n;
  }

  std::unique_ptr<Node> parse_subscribed() {
    int line = cur().line;
    auto slice = make(NodeKind::kSlice, line);
    if (is_op(":")) {
      advance();
    } else {
      auto node = parse_expression(true);
      if (!is_op(":")) return node;
      advance();
      slice->a = std::move(node);
    }
    if (!is_op(":") && !is_op("]") && !is_op(",")) slice->b = parse_expression(true);
    if (skip_op(":")) {
      if (!is_op("]") && !is_op(",")) slice->c = parse_expression(true);
    }
    return slice;
  }

  void parse_args(Node& node) {
    expect_op("(");
    bool kw_seen = false;
    while (!is_op(")")) {
      if (!node.args.empty()) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*") || is_op("**")) fail("unsupported construct '*args' in call", cur().line);
      if (cur().type == Tok::kName && peek().type == Tok::kOp && peek().text == "=") {
        node.arg_names.push_back(cur().text);
        advance();
        advance();
        kw_seen = true;
      } else {
        if (kw_seen) fail("positional argument after keyword argument", cur().line);
        node.arg_names.emplace_back();
      }
      node.args.push_back(parse_expression(true));
    }
    advance();  // )
  }

  std::unique_ptr<Node> parse_call(std::unique_ptr<Node> callee) {
    auto node = make(NodeKind::kCall, cur().line);
    if (callee->kind == NodeKind::kName) {
      called_names_.emplace_back(callee->name, callee->line);
    } else if (callee->kind == NodeKind::kGetAttr) {
      if (!method_names().contains(callee->name))
        fail("unsupported method '" + callee->name + "'", callee->line);
    } else {
      fail("unsupported call target", callee->line);
    }
    node->a = std::move(callee);
    parse_args(*node);
    return node;
  }

  std::string dotted_name() {
    std::string name = expect_name();
    while (is_op(".") && peek().type == Tok::kName) {
      advance();
      name += "." + cur().text;
      advance();
    }
    return name;
  }

  void check_test_name_arg(const Node& node, std::size_t k) {
    if (node.args.size() > k && node.args[k]->kind == NodeKind::kLiteral &&
        node.args[k]->literal.is_string()) {
      const std::string& t = node.args[k]->literal.str;
      if (!test_table().contains(t)) fail("unsupported test '" + t + "'", node.line);
    }
  }

  std::unique_ptr<Node> parse_filter(std::unique_ptr<Node> subject) {
    while (skip_op("|")) {
      int line = cur().line;
      std::string name = dotted_name();
      auto it = filter_table().find(name);
      if (it == filter_table().end()) fail("unsupported filter '" + name + "'", line);
      auto node = make(NodeKind::kFilter, line);
      node->name = name;
      node->op = static_cast<int>(it->second);
      node->a = std::move(subject);
      if (is_op("(")) parse_args(*node);
      switch (it->second) {
        case FilterId::kSelect:
        case FilterId::kReject:
          check_test_name_arg(*node, 0);
          break;
        case FilterId::kSelectAttr:
        case FilterId::kRejectAttr:
          check_test_name_arg(*node, 1);
          break;
        case FilterId::kMap:
          if (!node->args.empty() && node->arg_names[0].empty() &&
              node->args[0]->kind == NodeKind::kLiteral && node->args[0]->literal.is_string() &&
              !filter_table().contains(node->args[0]->literal.str)) {
            fail("unsupported filter '" + node->args[0]->literal.str + "'", line);
          }
          break;
        default:
          break;
      }
      subject = std::move(node);
    }
    return subject;
  }

  std::unique_ptr<Node> parse_test(std::unique_ptr<Node> subject) {
    int line = cur().line;
    advance();  // is
    bool negated = skip_name("not");
    std::string name;
    if (cur().type == Tok::kName) {
      name = dotted_name();
    } else {
      fail("expected a test name, got " + describe(cur()), cur().line);
    }
    auto it = test_table().find(name);
    if (it == test_table().end()) fail("unsupported test '" + name + "'", line);
    auto node = make(NodeKind::kTest, line);
    node->name = name;
    node->op = static_cast<int>(it->second);
    node->negated = negated;
    node->a = std::move(subject);
    if (is_op("(")) {
      parse_args(*node);
    } else {
      const Token& t = cur();
      bool arg_start = t.type == Tok::kName || t.type == Tok::kString || t.type == Tok::kInt ||
                       t.type == Tok::kFloat ||
                       (t.type == Tok::kOp && (t.text == "(" || t.text == "[" || t.text == "{"));
      if (arg_start &&
          !(t.type == Tok::kName && (t.text == "else" || t.text == "or" || t.text == "and"))) {
        if (is_name("is")) fail("you cannot chain multiple tests with is", t.line);
        auto arg = parse_postfix(parse_primary());
        node->args.push_back(std::move(arg));
        node->arg_names.emplace_back();
      }
    }
    return node;
  }

  std::vector<Token> toks_;
  ParseLimits limits_;
  std::size_t idx_ = 0;
  std::size_t depth_ = 0;
  int loop_depth_ = 0;
  std::vector<std::pair<std::string, int>> called_names_;
  std::unordered_set<std::string> macro_names_;
};

}  // namespace

Result<std::unique_ptr<Node>> parse_template(std::string_view source, const ParseLimits& limits) {
  if (source.size() > limits.max_bytes) {
    return fail(Error::invalid("chat_template: template is " + std::to_string(source.size()) +
                               " bytes, over the limit of " + std::to_string(limits.max_bytes)));
  }
  // Jinja: \r\n and \r become \n; one trailing newline is dropped (keep_trailing_newline=False).
  std::string src;
  src.reserve(source.size());
  for (std::size_t k = 0; k < source.size(); ++k) {
    if (source[k] == '\r') {
      src += '\n';
      if (k + 1 < source.size() && source[k + 1] == '\n') ++k;
    } else {
      src += source[k];
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();
  try {
    Lexer lexer(std::move(src));
    Parser parser(lexer.run(), limits);
    return parser.parse_root();
  } catch (const ParseError& e) {
    return fail(
        Error::invalid("chat_template: " + e.message + " at line " + std::to_string(e.line)));
  } catch (const std::bad_alloc&) {
    return fail(Error::invalid("chat_template: out of memory while parsing"));
  }
}

}  // namespace kvroute::chat_template
