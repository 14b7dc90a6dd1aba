"""Source text -> AST. Lark parses with the grammar shipped in ``kerneldsl.grammar``;
syntax errors become ``KernelSyntaxError`` with a message chosen from a table of
bad examples (lark's ``match_examples``), never a lark exception.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Iterator

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ast
from .errors import KernelSyntaxError
from .ir import Span

_OPEN = {"LPAR", "LBRACE"}
_CLOSE = {"RPAR", "RBRACE"}
_CONTINUES_AFTER = {"PLUS", "STAR", "EQUAL", "COMMA", "LPAR", "LBRACE"}
_CONTINUES_BEFORE = {"PLUS", "STAR"}


class _ContinuationLines:
    """Post-lexer: a newline ends a statement unless the statement obviously goes on.

    Newlines inside brackets, after an operator or ``=``/``,``, or before a line
    starting with ``+``/``*`` are dropped.
    """

    always_accept = ("_NL",)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        depth = 0
        previous: Token | None = None
        pending: list[Token] = []
        for token in stream:
            if token.type == "_NL":
                pending.append(token)
                continue
            if pending:
                drop = (depth > 0 or token.type in _CONTINUES_BEFORE
                        or (previous is not None and previous.type in _CONTINUES_AFTER))
                if not drop:
                    yield from pending
                pending = []
            if token.type in _OPEN:
                depth += 1
            elif token.type in _CLOSE:
                depth = max(depth - 1, 0)
            previous = token
            yield token
        yield from pending


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files("kerneldsl.grammar").joinpath("kernel.lark").read_text()
    return Lark(grammar, parser="lalr", lexer="basic", postlex=_ContinuationLines(), propagate_positions=True,
                maybe_placeholders=False)


def _span(meta_or_token) -> Span:
    return Span(meta_or_token.line, meta_or_token.column, meta_or_token.end_line, meta_or_token.end_column)


@v_args(meta=True)
class _ToAst(Transformer):
    """lark parse tree -> ``ast`` dataclasses."""

    def __init__(self, source: str):
        super().__init__()
        self.source = source

    def start(self, meta, statements):
        return ast.Program(tuple(statements), self.source)

    def definition(self, meta, children):
        name, value = children
        return ast.Definition(str(name), value, _span(meta), _span(name))

    def result(self, meta, children):
        return ast.Result(children[0], _span(meta))

    def sum(self, meta, terms):
        return ast.Sum(tuple(terms), _span(meta))

    def product(self, meta, factors):
        return ast.Product(tuple(factors), _span(meta))

    def weighted(self, meta, children):
        number, value = children
        return ast.Weighted(float(number), value, _span(meta))

    def call(self, meta, children):
        func, *args = children
        return ast.Call(str(func), tuple(args), _span(meta), _span(func))

    def featureset(self, meta, features):
        return ast.FeatureSet(tuple(features), _span(meta))

    def feature(self, meta, children):
        (token,) = children
        if token.type == "STRING":
            return ast.Feature(str(token)[1:-1], True, _span(token))
        return ast.Feature(str(token), False, _span(token))

    def name(self, meta, children):
        (token,) = children
        return ast.Name(str(token), _span(token))


# Syntax error messages, each with bad programs that produce it (lark's error_reporting_lalr pattern).
_SYNTAX_EXAMPLES: dict[str, list[str]] = {
    "missing a kernel after the operator": ["a +", "a *", "a + * b", "a * + b", "a + )", "(a +)", "fj(a +)"],
    "missing operator between two terms (combine kernels with + or *)": [
        "a b", "a (b)", "fj(a) b", "a {b}", "{a} {b}", "(a) (b)", "fj(a) fj(b)", "k = a b"],
    "a definition needs a value after '='": ["a =", "a = \n b", "a = )"],
    "unclosed '(': expected ')'": ["(a + b", "fj(a", "fj(a, b", "((a)", "(a\n"],
    "unclosed '{': expected '}'": ["{a, b", "{a", "{a,", "matern52({a, b)"],
    "unexpected closing bracket": ["a)", "a}", ")", "}", "fj(a))", "{a}}"],
    "a feature set holds feature names only, separated by commas": [
        "{a + b}", "{a * b}", "{fj(a)}", "{a b}", "{(a)}", "{{a}}", "{1}", "{a = b}"],
    "a numeric weight goes before its term, as in '0.3 * a + 0.7 * b'": [
        "a * 0.3", "0.3", "0.3 + a", "a + 0.3", "(0.5)", "fj(0.5)", "a + 0.5 b", "0.5 a"],
    "'=' can only follow a plain name at the start of a statement": [
        "fj(a) = b", "{a} = b", "(a) = b", "a + b = c", "0.5 = a", "a = b = c", "fj(a = b)", "(a = b)"],
    "a quoted name can only stand inside a feature set, as in {\"1cycle_max_lr\"}": [
        '"a"', 'a + "b"', 'fj("a")', '"a" = b', 'k = "a"'],
    "unexpected ','": ["a, b", "k = a, b", ","],
}

# The parser's state depends on how many statements came before (and on leading blank
# lines): show every example after each kind of prefix so that it matches anywhere.
_PREFIXES = ("", "\n", "x = a\n", "\nx = a\n", "x = a\ny = b\n", "\nx = a\ny = b\n")
_SYNTAX_EXAMPLES = {message: [prefix + example for example in examples for prefix in _PREFIXES]
                    for message, examples in _SYNTAX_EXAMPLES.items()}

_READABLE = {"NAME": "a name", "NUMBER": "a number", "STRING": "a quoted feature name", "LPAR": "'('",
             "RPAR": "')'", "LBRACE": "'{'", "RBRACE": "'}'", "PLUS": "'+'", "STAR": "'*'",
             "COMMA": "','", "EQUAL": "'='", "_NL": "end of line", "$END": "end of input"}


def _expected(err: UnexpectedInput) -> str:
    names = getattr(err, "expected", None) or getattr(err, "allowed", None) or ()
    readable = sorted({_READABLE.get(n, n) for n in names})
    return f"expected {', '.join(readable)}" if readable else ""


def _syntax_error(source: str, err: UnexpectedInput) -> KernelSyntaxError:
    message = None
    try:  # use_accepts=True trips a logging bug in lark 1.3's match_examples
        message = err.match_examples(_parser().parse, _SYNTAX_EXAMPLES, token_type_match_fallback=True,
                                     use_accepts=False)
    except Exception:  # an unmatched error keeps the generic message below
        message = None
    hint = _expected(err) or None
    if isinstance(err, UnexpectedCharacters):
        char = source[err.pos_in_stream] if err.pos_in_stream < len(source) else "?"
        hint = None
        if char == "-":
            message = "'-' is not an operator of the kernel language: combine kernels with + and *"
        else:
            message = f"unexpected character {char!r}"
    elif isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        message = message or "the program ends in the middle of an expression"
    if message is None:
        token = getattr(err, "token", None)
        message = f"unexpected {_describe_token(token)}" if token is not None else "syntax error"
    line, column = err.line, err.column
    if line is None or line < 1:  # end of input: point just past the last character
        lines = source.splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
    if not isinstance(err, UnexpectedCharacters):
        bracket = _unclosed_bracket_before(source, line)
        if bracket is not None:  # newlines inside it were dropped: the parser failed lines later
            close = ")" if bracket.type == "LPAR" else "}"
            return KernelSyntaxError(f"unclosed '{bracket}': expected '{close}'", source=source, line=bracket.line,
                                     column=bracket.column,
                                     hint=f"a newline inside brackets does not end the statement, so the parser only "
                                          f"failed on line {line}")
    return KernelSyntaxError(message, source=source, line=line, column=column, hint=hint)


def _unclosed_bracket_before(source: str, line: int) -> Token | None:
    """The innermost bracket opened before ``line`` and never closed in the whole source, if any."""
    try:
        tokens = list(_parser().lex(source))
    except UnexpectedInput:
        return None
    pairs = {"RPAR": "LPAR", "RBRACE": "LBRACE"}
    stack: list[Token] = []
    for token in tokens:
        if token.type in _OPEN:
            stack.append(token)
        elif token.type in _CLOSE and stack and stack[-1].type == pairs[token.type]:
            stack.pop()
    before = [t for t in stack if t.line < line]
    return before[-1] if before else None


def _describe_token(token: Token) -> str:
    if token.type in ("NAME", "NUMBER", "STRING"):
        return f"{_READABLE[token.type].split(' ', 1)[1]} {str(token)!r}"
    return _READABLE.get(token.type, repr(str(token)))


def parse(source: str) -> ast.Program:
    """Parse kernel-language source into an ``ast.Program``; raises ``KernelSyntaxError``."""
    if not isinstance(source, str):
        raise KernelSyntaxError(f"kernel source must be a string, got {type(source).__name__}")
    try:
        tree = _parser().parse(source)
        return _ToAst(source).transform(tree)
    except UnexpectedInput as err:
        raise _syntax_error(source, err) from None
    except VisitError as err:  # a transformer bug, never the user's fault; keep lark out of it
        raise KernelSyntaxError(f"could not build the syntax tree: {err.orig_exc}") from None
