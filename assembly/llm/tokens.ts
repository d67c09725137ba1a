// Prompt-token estimator. Admission and throttling need a token count for every request before it
// reaches the model, and a real BPE tokenizer (vocabulary tables of megabytes, merges per word) is
// too heavy for a filter. This follows the tokenizers' own first step instead, the regex that cuts
// text into pieces (words with their leading space, 1-3 digit groups, punctuation runs, whitespace,
// newlines), counts those pieces by kind in one pass without allocating, and weighs the counts with
// per-family costs fitted against the real encodings (test/estimator-accuracy.test.ts measures it).
//
// Pure: no host imports. Any i32 fed in is accepted; nothing here can trap.

export enum TokenizerFamily {
  O200K = 0,
  CL100K = 1,
}

/** "o200k" or "cl100k" to a TokenizerFamily; -1 for any other name. */
export function tokenizerFamilyFromName(name: string): i32 {
  if (name == "o200k") return TokenizerFamily.O200K;
  if (name == "cl100k") return TokenizerFamily.CL100K;
  return -1;
}

/** The configuration name of a TokenizerFamily. */
export function tokenizerFamilyName(family: TokenizerFamily): string {
  return family == TokenizerFamily.CL100K ? "cl100k" : "o200k";
}

// Character classes. ASCII ones come from TEXT_CLASSES; LETTER (any non-ASCII letter) carries its
// script in the bits above the class.
const LOWER: i32 = 0;
const UPPER: i32 = 1;
const DIGIT: i32 = 2;
const SPACE: i32 = 3;
const NEWLINE: i32 = 4;
const PUNCT: i32 = 5;
const LETTER: i32 = 6;
const SYMBOL: i32 = 7;
// In a class table for Machine#addAscii: a byte it leaves to the caller.
const STOP: i32 = 15;

// Class tables give the class of each of 256 bytes, for Machine#addAscii. This one is for UTF-8 text:
// 0 lower, 1 upper, 2 digit, 3 space, 4 newline, 5 punctuation (control characters included: the
// tokenizers' regex treats them as punctuation too), STOP for the bytes from 0x80 up, which start or
// continue multi-byte sequences. Static data, not a StaticArray: the per-character path reads it with
// one load, no object and no bounds check in between.
const TEXT_CLASSES: usize = memory.data<u8>([
  5, 5, 5, 5, 5, 5, 5, 5, 5, 3, 4, 3, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, // 0x00
  3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 5, 5, 5, 5, 5, 5, // 0x20
  5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 5, 5, 5, 5, 5, // 0x40
  5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 5, 5, 5, 5, // 0x60
  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
]);

/**
 * A class table for Machine#addAscii that stops at every byte `accepted` (256 bytes) holds 0 for, as
 * well as at those from 0x80 up. Built once, at module start, by readers that stop at more bytes than
 * UTF-8 text does (a JSON string stops at quote, backslash and control characters); never freed.
 * `accepted` must take the letters a-z: addAscii reads a word's letters without the table.
 */
export function classesAccepting(accepted: usize): usize {
  const table = heap.alloc(256);
  for (let c: usize = 0; c < 256; c++) {
    store<u8>(table + c, load<u8>(accepted + c) != 0 ? load<u8>(TEXT_CLASSES + c) : <u8>STOP);
  }
  return table;
}

// Scripts of non-ASCII letters. Accented Latin counts as Latin letters with an extra cost; the
// others are costed per character, since both vocabularies hold far fewer of their words.
const LATIN: i32 = 0;
const GREEK: i32 = 1;
const CYRILLIC: i32 = 2;
const ARMENIAN: i32 = 3;
const HEBREW: i32 = 4;
const ARABIC: i32 = 5;
const INDIC: i32 = 6;
const THAI: i32 = 7;
const GEORGIAN: i32 = 8;
const HANGUL: i32 = 9;
const KANA: i32 = 10;
const HAN: i32 = 11;
const OTHER_SCRIPT: i32 = 12;

// For Machine#addScriptRun: the script of the letters that the two-byte UTF-8 sequences with
// lead byte 0xc0 + i all encode (64 code points each), or 0 where classifyWide gives them more than
// one class or script, or Latin.
const TWO_BYTE_SCRIPTS: usize = memory.data<u8>([
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // 0xc0-0xcd: Latin, IPA, combining marks, U+0370...
  1, 1, // 0xce-0xcf: U+0380-U+03FF, GREEK
  2, 2, 2, 2, // 0xd0-0xd3: U+0400-U+04FF, CYRILLIC
  0, 3, 0, 4, // 0xd4-0xd7: U+0500-U+05FF, ARMENIAN from U+0530, HEBREW from U+0590
  5, 5, 5, 5, 5, 5, 5, 5, // 0xd8-0xdf: U+0600-U+07FF, ARABIC
]);

@inline function letterOf(script: i32): i32 {
  return LETTER | (script << 4);
}

/** Class (and script) of a non-ASCII code point, by the Unicode blocks that matter for cost. */
function classifyWide(cp: i32): i32 {
  if (cp < 0x0300) {
    if (cp < 0xc0) return cp == 0xa0 || cp == 0x85 ? SPACE : SYMBOL;
    return cp == 0xd7 || cp == 0xf7 ? SYMBOL : letterOf(LATIN);
  }
  // Combining marks mostly sit on Latin letters (decomposed accents).
  if (cp < 0x0370) return letterOf(LATIN);
  if (cp < 0x0400) return letterOf(GREEK);
  if (cp < 0x0530) return letterOf(CYRILLIC);
  if (cp < 0x0590) return letterOf(ARMENIAN);
  if (cp < 0x0600) return letterOf(HEBREW);
  if (cp < 0x0900) return letterOf(ARABIC);
  if (cp < 0x0e00) return letterOf(INDIC);
  if (cp < 0x0f00) return letterOf(THAI);
  if (cp < 0x2000) {
    if (cp >= 0x10a0 && cp < 0x1100) return letterOf(GEORGIAN);
    if (cp >= 0x1100 && cp < 0x1200) return letterOf(HANGUL);
    if (cp >= 0x1e00 && cp < 0x1f00) return letterOf(LATIN);
    if (cp >= 0x1f00) return letterOf(GREEK);
    return letterOf(OTHER_SCRIPT);
  }
  if (cp <= 0x200a || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000) return SPACE;
  if (cp < 0x3040) return SYMBOL;
  if (cp < 0x3100) return letterOf(KANA);
  if (cp >= 0x3130 && cp < 0x3190) return letterOf(HANGUL);
  if (cp >= 0x3400 && cp < 0xa000) return letterOf(HAN);
  if (cp < 0x10000) {
    if (cp >= 0xac00 && cp < 0xd7b0) return letterOf(HANGUL);
    if (cp >= 0xa000 && cp < 0xac00) return letterOf(OTHER_SCRIPT);
    if (cp >= 0xf900 && cp < 0xfb00) return letterOf(HAN);
    if (cp >= 0xfb50 && cp < 0xfe00) return letterOf(ARABIC);
    if (cp >= 0xfe70 && cp < 0xff00) return letterOf(ARABIC);
    if (cp >= 0xff10 && cp <= 0xff19) return DIGIT;
    if ((cp >= 0xff21 && cp <= 0xff3a) || (cp >= 0xff41 && cp <= 0xff5a)) return letterOf(LATIN);
    if (cp >= 0xff66 && cp <= 0xff9f) return letterOf(KANA);
    return SYMBOL;
  }
  if (cp >= 0x1f000 && cp < 0x20000) return SYMBOL;
  if (cp >= 0x20000 && cp < 0x40000) return letterOf(HAN);
  return letterOf(OTHER_SCRIPT);
}

// Counted features. The first WEIGHTED ones each cost a fitted number of tokens; the last three
// are signals for the language correction in score().
const F_WORD_SPACED: i32 = 0; // Latin word piece led by a space: " word"
const F_WORD_BARE: i32 = 1; // Latin word piece with no lead, or the next part of a camelCase word
const F_WORD_MARKED: i32 = 2; // Latin word piece led by one punctuation mark: ".word", "_word"
const F_SPACED_OVER4: i32 = 3; // letters past the 4th in spaced words
const F_SPACED_OVER8: i32 = 4; // letters past the 8th in spaced words
const F_BARE_OVER3: i32 = 5; // letters past the 3rd in other words
// Letters past the 12th in any word part. Few real words are that long, while random letters
// (keys, hashes, "qxvbz...") run at about two letters a token: without this, a prompt of them
// would pass for a fraction of its size.
const F_LONG_OVER12: i32 = 6;
const F_UPPER_OVER2: i32 = 7; // capitals past the 2nd in one word part (acronyms, base64)
const F_ACCENTED: i32 = 8; // non-ASCII Latin letters
const F_SCRIPT_WORD: i32 = 9; // word pieces holding letters of other scripts
const F_DIGIT_GROUP: i32 = 10; // groups of up to three digits
const F_PUNCT: i32 = 11; // punctuation runs
const F_PUNCT_SPACED: i32 = 12; // punctuation runs led by a space: " {"
const F_PUNCT_OVER2: i32 = 13; // ASCII marks past the 2nd in a run
const F_SYMBOL2: i32 = 14; // non-ASCII symbols by UTF-8 length
const F_SYMBOL3: i32 = 15;
const F_SYMBOL4: i32 = 16;
const F_WHITESPACE: i32 = 17; // whitespace pieces (indentation, spaces before digits)
const F_NEWLINE: i32 = 18; // newline pieces not taken in by a punctuation run
const F_INVALID: i32 = 19; // bytes that are not UTF-8
const F_SCRIPT_CHARS: i32 = 20; // + script - 1: letters of GREEK .. OTHER_SCRIPT
const WEIGHTED: i32 = F_SCRIPT_CHARS + OTHER_SCRIPT;
const F_LATIN_LETTERS: i32 = WEIGHTED; // letters of other scripts are in F_SCRIPT_CHARS
const F_TH: i32 = WEIGHTED + 1; // "th" inside words: common in English, rare elsewhere
const F_VOWEL_END: i32 = WEIGHTED + 2; // spaced words ending in a, i, o (or accented forms)
const FEATURES: i32 = WEIGHTED + 3;

// Features that each stand for one piece of the tokenizers' pre-split.
const PIECE_FEATURES: StaticArray<i32> = [
  F_WORD_SPACED, F_WORD_BARE, F_WORD_MARKED, F_SCRIPT_WORD, F_DIGIT_GROUP, F_PUNCT, F_PUNCT_SPACED, F_WHITESPACE, F_NEWLINE, F_INVALID,
];

// Weights for the language correction, after the per-feature ones.
const W_FOREIGN_OVER4: i32 = WEIGHTED;
const W_FOREIGN_WORD: i32 = WEIGHTED + 1;
const W_VOWEL_WORD: i32 = WEIGHTED + 2;
const W_VOWEL_OVER4: i32 = WEIGHTED + 3;

// Tokens per counted feature, two columns: o200k, cl100k. Fitted (least absolute relative error,
// under-estimates past 6% punished twenty-fold) against gpt-tokenizer's encodings of the samples of
// tooling/corpus.ts. Script letters then got 5% more, as a margin: only one or two texts per script
// were there to fit them. Emoji (F_SYMBOL4), F_LONG_OVER12 and OTHER_SCRIPT had too few samples
// and are set by hand, on the high side. Refit whenever the way pieces are cut or counted changes.
const WEIGHTS: StaticArray<f64> = [
  0.876, 0.874, // F_WORD_SPACED
  1.305, 1.339, // F_WORD_BARE
  1.515, 1.337, // F_WORD_MARKED
  0.086, 0.057, // F_SPACED_OVER4
  0.000, 0.224, // F_SPACED_OVER8
  0.049, 0.050, // F_BARE_OVER3
  0.450, 0.450, // F_LONG_OVER12
  0.260, 0.001, // F_UPPER_OVER2
  1.169, 1.645, // F_ACCENTED
  0.530, 1.063, // F_SCRIPT_WORD
  1.425, 1.524, // F_DIGIT_GROUP
  0.753, 0.817, // F_PUNCT
  0.733, 0.798, // F_PUNCT_SPACED
  0.509, 0.424, // F_PUNCT_OVER2
  0.996, 0.997, // F_SYMBOL2
  0.639, 0.626, // F_SYMBOL3
  1.800, 2.500, // F_SYMBOL4
  1.155, 1.065, // F_WHITESPACE
  1.190, 1.038, // F_NEWLINE
  1.000, 1.000, // F_INVALID
  0.320, 0.916, // GREEK
  0.280, 0.475, // CYRILLIC
  0.353, 2.060, // ARMENIAN
  0.364, 1.010, // HEBREW
  0.270, 0.697, // ARABIC
  0.330, 1.275, // INDIC
  0.464, 1.010, // THAI
  0.264, 2.064, // GEORGIAN
  0.628, 1.005, // HANGUL
  0.808, 0.885, // KANA
  0.923, 1.433, // HAN
  1.000, 2.000, // OTHER_SCRIPT
  0.071, 0.136, // W_FOREIGN_OVER4
  0.067, 0.374, // W_FOREIGN_WORD
  0.005, 0.000, // W_VOWEL_WORD
  0.121, 0.178, // W_VOWEL_OVER4
];

// Language correction. Both vocabularies hold long English words whole, but split other languages'
// words much more. Text with no "th" and little punctuation is taken for non-English prose, and a
// share of spaced words ending in a vowel (rare in English) for a European language.
const ENGLISH_TH_RATE: f64 = 0.012; // "th" per letter at which text counts as fully English
const PROSE_PUNCT_PER_WORD: f64 = 0.2; // punctuation runs per word up to which text is prose...
const CODE_PUNCT_PER_WORD: f64 = 0.5; // ...and from which it is code or data
const VOWEL_END_LOW: f64 = 0.05; // share of spaced words ending in a vowel: English-like...
const VOWEL_END_HIGH: f64 = 0.2; // ...and surely not English

// Pieces in progress.
const NONE: i32 = 0;
const WORD: i32 = 1;
const DIGITS: i32 = 2;
const PUNCTS: i32 = 3;
const SPACES: i32 = 4;
const NEWLINES: i32 = 5;

// What leads a word piece.
const LEAD_NONE: i32 = 0;
const LEAD_SPACE: i32 = 1;
const LEAD_MARK: i32 = 2;

@inline function clamp01(x: f64): f64 {
  return x < 0 ? 0 : x > 1 ? 1 : x;
}

/** 1 for a, i, o and their accented forms (à-å, ì-ï, ò-ö), else 0; without branches (see addWordPart). */
@inline function endsLikeVowel(c: i32): i32 {
  return <i32>(c == 0x61) | <i32>(c == 0x69) | <i32>(c == 0x6f) | <i32>(<u32>(c - 0xe0) <= 5) | <i32>(<u32>(c - 0xec) <= 3) | <i32>(<u32>(c - 0xf2) <= 4);
}

/** Where the run of bytes of class `cls` from `p` ends. */
@inline function classRunEnd(p: usize, end: usize, classes: usize, cls: i32): usize {
  while (p < end && <i32>load<u8>(classes + <usize>load<u8>(p)) == cls) p++;
  return p;
}

@inline function increment(counts: usize, feature: i32, by: i32): void {
  const at = counts + (<usize>feature << 2);
  store<i32>(at, load<i32>(at) + by);
}

// The machine's size rounded up, so that the i32 counters after it are aligned.
const MACHINE_BYTES: usize = (offsetof<Machine>() + 3) & ~(<usize>3);

/**
 * The pre-tokenizer state and its counters. Unmanaged and laid over a buffer that TokenEstimator
 * owns: the per-character path works on plain memory at a fixed address, with no object header or
 * field indirection between it and the counters.
 */
@unmanaged
export class Machine {
  mode: i32;
  prev: i32;
  // WORD: the current word part (words split at a lower-to-upper change, like o200k's regex)
  letters: i32;
  uppers: i32;
  lead: i32;
  prevLower: bool;
  hasScript: bool;
  // DIGITS
  digits: i32;
  // PUNCTS: a run takes in the newlines right after it, as the tokenizers' regex does
  run: i32;
  runAscii: i32;
  runSpaced: bool;
  runNewline: bool;
  // SPACES: pendingNewline when they follow a newline piece that may still grow
  pendingNewline: bool;
  spaces: i32;
  lastSpace: i32;

  /** FEATURES counters right after the machine, then as many for tokens() to work in. */
  @inline get counts(): usize {
    return changetype<usize>(this) + MACHINE_BYTES;
  }

  @inline get scratch(): usize {
    return this.counts + (<usize>FEATURES << 2);
  }

  reset(): void {
    memory.fill(changetype<usize>(this), 0, MACHINE_BYTES + (<usize>FEATURES << 2));
  }

  @inline addCodePoint(cp: i32): void {
    let kind: i32;
    if (<u32>cp < 0x80) {
      kind = <i32>load<u8>(TEXT_CLASSES + <usize>cp);
    } else if (<u32>cp > 0x10ffff) {
      this.addInvalid();
      return;
    } else {
      kind = classifyWide(cp);
    }
    const cls = kind & 15;
    if (cls <= UPPER || cls == LETTER) {
      this.addLetter(cp, cls, kind >> 4);
    } else if (cls == DIGIT) {
      this.addDigit();
    } else if (cls == PUNCT || cls == SYMBOL) {
      this.addMark(cp, cls);
    } else if (cls == SPACE) {
      this.addSpace(cp);
    } else {
      this.addNewline();
    }
    this.prev = cp;
  }

  /**
   * Feeds ASCII bytes from `ptr` up to `end`, stopping at the first byte that `classes` (a class
   * table: TEXT_CLASSES or one from classesAccepting) gives STOP; returns where it stopped. Callers
   * pass the bytes they can hand over undecoded (plain ASCII for UTF-8 text; a JSON string also stops
   * at quote and backslash). Text is mostly runs of one class (letters in words, indentation, digits),
   * and within a run only a counter moves: the bytes after a run's first take a tight loop instead of
   * a trip through the state machine each. Marks and capitals mostly come alone, and a run loop for
   * them cost more than it saved.
   */
  addAscii(ptr: usize, end: usize, classes: usize): usize {
    let p = ptr;
    while (p < end) {
      const c = <i32>load<u8>(p);
      switch (<i32>load<u8>(classes + <usize>c)) {
        case LOWER: {
          if (this.mode != WORD) this.startWord();
          p = this.addLowerRun(p, end, classes);
          break;
        }
        case UPPER: {
          this.addLetter(c, UPPER, 0);
          this.prev = c;
          p++;
          break;
        }
        case DIGIT: {
          this.addDigit();
          let runEnd = classRunEnd(p + 1, end, classes, DIGIT);
          let digits = this.digits + <i32>(runEnd - p - 1);
          // Numbers joined by single marks (lists, tables, dates, decimals) take a loop of their own:
          // each mark is a piece between two digit groups, which the state machine would go through
          // one byte at a time.
          while (runEnd + 1 < end && <i32>load<u8>(classes + <usize>load<u8>(runEnd)) == PUNCT && <i32>load<u8>(classes + <usize>load<u8>(runEnd + 1)) == DIGIT) {
            increment(this.counts, F_DIGIT_GROUP, (digits + 2) / 3);
            increment(this.counts, F_PUNCT, 1);
            const groupStart = runEnd + 1;
            runEnd = classRunEnd(groupStart + 1, end, classes, DIGIT);
            digits = <i32>(runEnd - groupStart);
          }
          this.digits = digits;
          p = this.endRun(runEnd);
          break;
        }
        case SPACE: {
          this.addSpace(c);
          const runEnd = classRunEnd(p + 1, end, classes, SPACE);
          this.spaces += <i32>(runEnd - p - 1);
          p = this.endRun(runEnd);
          this.lastSpace = this.prev;
          break;
        }
        case NEWLINE: {
          // More newlines change nothing: the piece they belong to is already a newline piece.
          this.addNewline();
          p = this.endRun(classRunEnd(p + 1, end, classes, NEWLINE));
          break;
        }
        case PUNCT: {
          this.addMark(c, PUNCT);
          this.prev = c;
          p++;
          break;
        }
        default:
          return p;
      }
    }
    return p;
  }

  /** After a run that ends before `runEnd`: its last byte is the previous character. */
  @inline private endRun(runEnd: usize): usize {
    this.prev = <i32>load<u8>(runEnd - 1);
    return runEnd;
  }

  /**
   * Adds the lower-case letters from `p` (at least one) to the word in progress, with the machine's
   * fields in locals; returns where they end. A space and a letter right after them (most of prose)
   * go straight on to the next spaced word.
   */
  @inline private addLowerRun(p: usize, end: usize, classes: usize): usize {
    const spaceTaken = <i32>load<u8>(classes + 0x20) == SPACE;
    while (true) {
      let prev = this.prev;
      let letters = this.letters;
      let th = 0;
      let c = <i32>load<u8>(p);
      do {
        if (c == 0x68 && (prev | 0x20) == 0x74) th++;
        letters++;
        prev = c;
        p++;
        if (p == end) break;
        c = <i32>load<u8>(p);
      } while (<u32>(c - 0x61) <= 25);
      this.letters = letters;
      this.prev = prev;
      this.prevLower = true;
      if (th != 0) increment(this.counts, F_TH, th);
      if (c != 0x20 || p + 1 >= end || !spaceTaken) return p;
      const next = <i32>load<u8>(classes + <usize>load<u8>(p + 1));
      if (next > UPPER) return p;
      this.nextSpacedWord();
      p++;
      if (next == UPPER) return p;
    }
  }

  /**
   * After a letter of another script: takes the letters of other scripts that follow it, from `p`
   * up to `end`, as long as they come from blocks of one script each (the bulk of Greek, Cyrillic,
   * Armenian, Hebrew, Arabic, Indic, Thai, Hangul, Kana and Han text); returns where they end. The
   * state a script letter leaves (a word with no Latin part) is what the next one needs, so each only
   * moves its script's counter and the decoding, classifyWide and state machine are skipped. Called
   * after every non-ASCII character; out of line, which measured no slower than inlined and is smaller.
   */
  addScriptRun(p: usize, end: usize): usize {
    if (this.mode != WORD || this.letters != 0) return p;
    const start = p;
    const counts = this.counts;
    let last = 0;
    // Strict UTF-8, as decodeUtf8At: none of the lead bytes taken here needs more checks than that
    // of its continuation bytes.
    while (p + 1 < end) {
      const b0 = <i32>load<u8>(p);
      const b1 = <i32>load<u8>(p + 1);
      if ((b1 & 0xc0) != 0x80) break;
      let script = 0;
      if (<u32>(b0 - 0xc0) < 0x20) {
        script = <i32>load<u8>(TWO_BYTE_SCRIPTS + <usize>(b0 - 0xc0));
        if (script == 0) break;
        last = ((b0 & 0x1f) << 6) | (b1 & 0x3f);
        p += 2;
      } else {
        if (p + 2 >= end) break;
        const b2 = <i32>load<u8>(p + 2);
        if ((b2 & 0xc0) != 0x80) break;
        if (<u32>(b0 - 0xe4) <= 5) script = HAN; // U+4000-U+9FFF
        else if (b0 == 0xe3) script = <u32>(b1 - 0x81) <= 2 ? KANA : 0; // U+3040-U+30FF
        else if (b0 == 0xe0) script = <u32>(b1 - 0xa4) <= 0x13 ? INDIC : <u32>(b1 - 0xb8) <= 3 ? THAI : 0; // U+0900-U+0EFF
        else if (b0 == 0xeb || b0 == 0xec || (b0 == 0xea && b1 >= 0xb0)) script = HANGUL; // U+AC00-U+CFFF
        if (script == 0) break;
        last = ((b0 & 0x0f) << 12) | ((b1 & 0x3f) << 6) | (b2 & 0x3f);
        p += 3;
      }
      increment(counts, F_SCRIPT_CHARS + script - 1, 1);
    }
    if (p == start) return p;
    this.lead = LEAD_NONE;
    this.hasScript = true;
    this.prev = last;
    return p;
  }

  /** One byte that is not UTF-8: a piece of its own. */
  addInvalid(): void {
    this.flush();
    increment(this.counts, F_INVALID, 1);
    this.prev = 0;
  }

  endText(): void {
    this.flush();
    this.prev = 0;
  }

  /** Counts as of now with the unfinished piece added, in the scratch counters; state untouched. */
  snapshot(): usize {
    const scratch = this.scratch;
    memory.copy(scratch, this.counts, <usize>FEATURES << 2);
    this.addPiece(scratch);
    return scratch;
  }

  @inline private addLetter(cp: i32, cls: i32, script: i32): void {
    const counts = this.counts;
    if (this.mode != WORD) this.startWord();
    if (cls == LETTER) {
      if (script == LATIN) {
        increment(counts, F_ACCENTED, 1);
        this.letters++;
        this.prevLower = true;
      } else {
        // Mostly letter after letter of one script: no Latin part to end, only the lead to drop.
        if (this.letters != 0) this.endWordPart();
        else this.lead = LEAD_NONE;
        increment(counts, F_SCRIPT_CHARS + script - 1, 1);
        this.hasScript = true;
      }
      return;
    }
    if (cls == UPPER) {
      if (this.prevLower) this.endWordPart();
      this.uppers++;
    } else if (cp == 0x68 && (this.prev == 0x74 || this.prev == 0x54)) {
      increment(counts, F_TH, 1);
    }
    this.letters++;
    this.prevLower = cls == LOWER;
  }

  /**
   * What a space after a word does, followed by the start of the word it leads: the state that
   * addSpace(0x20) and then startWord() leave, without the trip through SPACES.
   */
  @inline private nextSpacedWord(): void {
    const counts = this.counts;
    this.countWordPart(counts);
    if (this.hasScript) increment(counts, F_SCRIPT_WORD, 1);
    this.letters = 0;
    this.uppers = 0;
    this.lead = LEAD_SPACE;
    this.prevLower = false;
    this.hasScript = false;
    this.lastSpace = 0x20;
    this.prev = 0x20;
  }

  @inline private startWord(): void {
    let lead = LEAD_NONE;
    if (this.mode == SPACES) {
      this.leaveSpaces();
      lead = LEAD_SPACE;
    } else if (this.mode == PUNCTS && this.run == 1 && !this.runSpaced && !this.runNewline) {
      // A single mark right before a word is cut with it (".get", "_name", "(self").
      this.run = 0;
      this.runAscii = 0;
      lead = LEAD_MARK;
    } else {
      this.flush();
    }
    this.mode = WORD;
    this.lead = lead;
    this.prevLower = false;
    this.uppers = 0;
    this.hasScript = false;
  }

  @inline private addDigit(): void {
    if (this.mode == SPACES) {
      // Digits take no leading space: the space is a piece of its own.
      increment(this.counts, F_WHITESPACE, 1);
      this.leaveSpaces();
    }
    if (this.mode != DIGITS) {
      this.flush();
      this.mode = DIGITS;
    }
    this.digits++;
  }

  @inline private addMark(cp: i32, cls: i32): void {
    if (this.mode == PUNCTS && this.runNewline) this.flush();
    if (this.mode != PUNCTS) {
      let spaced = false;
      if (this.mode == SPACES) {
        // Only a plain space joins the run; a tab before it stays a piece of its own.
        if (this.lastSpace == 0x20) spaced = true;
        else increment(this.counts, F_WHITESPACE, 1);
        this.leaveSpaces();
      } else {
        this.flush();
      }
      this.mode = PUNCTS;
      this.runSpaced = spaced;
    }
    this.run++;
    if (cls == PUNCT) {
      this.runAscii++;
    } else {
      increment(this.counts, cp >= 0x10000 ? F_SYMBOL4 : cp >= 0x800 ? F_SYMBOL3 : F_SYMBOL2, 1);
    }
  }

  @inline private addSpace(cp: i32): void {
    if (this.mode == NEWLINES) {
      this.mode = SPACES;
      this.pendingNewline = true;
    } else if (this.mode != SPACES) {
      this.flush();
      this.mode = SPACES;
    }
    this.spaces++;
    this.lastSpace = cp;
  }

  @inline private addNewline(): void {
    const mode = this.mode;
    if (mode == PUNCTS) {
      this.runNewline = true;
    } else if (mode == SPACES) {
      // Spaces before a newline belong to the newline piece (and to an earlier one, if pending).
      this.spaces = 0;
      this.pendingNewline = false;
      this.mode = NEWLINES;
    } else if (mode != NEWLINES) {
      this.flush();
      this.mode = NEWLINES;
    }
  }

  /** Ends a run of spaces before a word, digits or marks: all but the last space form one piece. */
  private leaveSpaces(): void {
    const counts = this.counts;
    if (this.pendingNewline) increment(counts, F_NEWLINE, 1);
    if (this.spaces > 1) increment(counts, F_WHITESPACE, 1);
    this.spaces = 0;
    this.pendingNewline = false;
    this.mode = NONE;
  }

  private endWordPart(): void {
    this.addWordPart(this.counts);
    this.letters = 0;
    this.uppers = 0;
    this.lead = LEAD_NONE;
  }

  /** Counts the Latin word part that ends at `prev`. */
  private addWordPart(counts: usize): void {
    this.countWordPart(counts);
  }

  /**
   * The body of addWordPart, inlined where words follow each other in prose (nextSpacedWord). Adds
   * zeros rather than testing word lengths: lengths vary from word to word, so those tests were
   * branches the CPU could not predict.
   */
  @inline private countWordPart(counts: usize): void {
    const letters = this.letters;
    if (letters == 0) return;
    increment(counts, F_LATIN_LETTERS, letters);
    if (this.lead == LEAD_SPACE) {
      increment(counts, F_WORD_SPACED, 1);
      increment(counts, F_SPACED_OVER4, max(letters - 4, 0));
      increment(counts, F_SPACED_OVER8, max(letters - 8, 0));
      increment(counts, F_VOWEL_END, <i32>(letters > 1) & endsLikeVowel(this.prev));
    } else {
      increment(counts, this.lead == LEAD_MARK ? F_WORD_MARKED : F_WORD_BARE, 1);
      increment(counts, F_BARE_OVER3, max(letters - 3, 0));
    }
    increment(counts, F_LONG_OVER12, max(letters - 12, 0));
    increment(counts, F_UPPER_OVER2, max(this.uppers - 2, 0));
  }

  /** Adds the piece in progress to `counts`; leaves the state as it is. */
  @inline private addPiece(counts: usize): void {
    switch (this.mode) {
      case WORD: {
        this.addWordPart(counts);
        if (this.hasScript) increment(counts, F_SCRIPT_WORD, 1);
        break;
      }
      case DIGITS: {
        increment(counts, F_DIGIT_GROUP, (this.digits + 2) / 3);
        break;
      }
      case PUNCTS: {
        increment(counts, this.runSpaced ? F_PUNCT_SPACED : F_PUNCT, 1);
        if (this.runAscii > 2) increment(counts, F_PUNCT_OVER2, this.runAscii - 2);
        break;
      }
      case SPACES: {
        if (this.pendingNewline) increment(counts, F_NEWLINE, 1);
        increment(counts, F_WHITESPACE, 1);
        break;
      }
      case NEWLINES: {
        increment(counts, F_NEWLINE, 1);
        break;
      }
    }
  }

  /**
   * Adds the piece in progress to the counts and clears it. Inlined (addPiece too): each caller then
   * has a branch on the mode of its own, which the CPU predicts far better than one shared branch.
   */
  @inline private flush(): void {
    this.addPiece(this.counts);
    this.mode = NONE;
    this.letters = 0;
    this.uppers = 0;
    this.lead = LEAD_NONE;
    this.prevLower = false;
    this.hasScript = false;
    this.digits = 0;
    this.run = 0;
    this.runAscii = 0;
    this.runSpaced = false;
    this.runNewline = false;
    this.spaces = 0;
    this.pendingNewline = false;
  }
}

/** Estimated tokens from counts, weighed for one family (its column in WEIGHTS). */
function score(counts: usize, column: i32): i32 {
  let sum: f64 = 0;
  for (let i = 0; i < WEIGHTED; i++) sum += <f64>load<i32>(counts + (<usize>i << 2)) * unchecked(WEIGHTS[(i << 1) + column]);

  const spaced = <f64>load<i32>(counts + (<usize>F_WORD_SPACED << 2));
  const others = <f64>(load<i32>(counts + (<usize>F_WORD_BARE << 2)) + load<i32>(counts + (<usize>F_WORD_MARKED << 2)));
  const over4 = <f64>load<i32>(counts + (<usize>F_SPACED_OVER4 << 2));
  let letters = <f64>load<i32>(counts + (<usize>F_LATIN_LETTERS << 2));
  for (let i = F_SCRIPT_CHARS; i < WEIGHTED; i++) letters += <f64>load<i32>(counts + (<usize>i << 2));
  const th = <f64>load<i32>(counts + (<usize>F_TH << 2));
  const english = letters > 0 ? clamp01(th / letters / ENGLISH_TH_RATE) : 1.0;
  const marks = <f64>(load<i32>(counts + (<usize>F_PUNCT << 2)) + load<i32>(counts + (<usize>F_PUNCT_SPACED << 2)));
  const marksPerWord = marks / Math.max(1, spaced + others);
  const prose = clamp01((CODE_PUNCT_PER_WORD - marksPerWord) / (CODE_PUNCT_PER_WORD - PROSE_PUNCT_PER_WORD));
  const foreign = (1 - english) * prose;
  const vowelShare = <f64>load<i32>(counts + (<usize>F_VOWEL_END << 2)) / Math.max(1, spaced);
  const vowel = clamp01((vowelShare - VOWEL_END_LOW) / (VOWEL_END_HIGH - VOWEL_END_LOW));
  sum += foreign * (over4 * unchecked(WEIGHTS[(W_FOREIGN_OVER4 << 1) + column]) + others * unchecked(WEIGHTS[(W_FOREIGN_WORD << 1) + column]));
  sum += vowel * (spaced * unchecked(WEIGHTS[(W_VOWEL_WORD << 1) + column]) + over4 * unchecked(WEIGHTS[(W_VOWEL_OVER4 << 1) + column]));

  // BPE never merges across the regex's pieces, so their number bounds the count from below; the
  // fitted weights alone can fall under it for text of nothing but short words ("a b c d ...").
  let pieces = 0;
  for (let i = 0; i < PIECE_FEATURES.length; i++) pieces += load<i32>(counts + (<usize>unchecked(PIECE_FEATURES[i]) << 2));
  if (sum < <f64>pieces) sum = <f64>pieces;

  const rounded = Math.ceil(sum);
  return rounded >= <f64>i32.MAX_VALUE ? i32.MAX_VALUE : <i32>rounded;
}

// The machine and both sets of counters, in i32 words.
const STORAGE_WORDS: i32 = <i32>(MACHINE_BYTES >> 2) + 2 * FEATURES;

export class TokenEstimator {
  readonly family: TokenizerFamily;
  /** Owns the memory the machine lives in; it goes away with the estimator. */
  private storage: StaticArray<i32> = new StaticArray<i32>(STORAGE_WORDS);
  /**
   * For loops that feed text piece by piece (the JSON reader): they call the machine directly rather
   * than through the estimator. Valid while the estimator lives.
   */
  readonly machine: Machine = changetype<Machine>(changetype<usize>(this.storage));

  constructor(family: TokenizerFamily = TokenizerFamily.O200K) {
    this.family = family == TokenizerFamily.CL100K ? TokenizerFamily.CL100K : TokenizerFamily.O200K;
  }

  /** Starts a new request. */
  reset(): void {
    this.machine.reset();
  }

  /** Feeds one decoded Unicode code point; values outside 0..0x10FFFF count as invalid input. */
  addCodePoint(cp: i32): void {
    this.machine.addCodePoint(cp);
  }

  /** Ends one string: the next code point starts a new piece, as in a separately tokenized text. */
  endText(): void {
    this.machine.endText();
  }

  /** Estimated tokens for everything fed since reset(), the unfinished piece included. */
  tokens(): i32 {
    return score(this.machine.snapshot(), <i32>this.family);
  }

  /** Feeds UTF-8 bytes; each byte that is not part of a valid sequence counts as one token. */
  addUtf8(bytes: Uint8Array): void {
    feedUtf8(this.machine, bytes.dataStart, bytes.length);
  }

  /** The same over `length` bytes at `ptr` in linear memory; the caller vouches for the range. */
  addUtf8At(ptr: usize, length: i32): void {
    feedUtf8(this.machine, ptr, length);
  }
}

/**
 * Decodes `length` bytes of UTF-8 at `ptr` into the estimator. Each byte that does not start a
 * valid sequence (stray continuation, overlong form, surrogate, past U+10FFFF, cut short) is fed as
 * one invalid byte and decoding resumes at the next.
 */
function feedUtf8(machine: Machine, ptr: usize, length: i32): void {
  let i = 0;
  while (i < length) {
    if (load<u8>(ptr + <usize>i) < 0x80) {
      i = <i32>(machine.addAscii(ptr + <usize>i, ptr + <usize>length, TEXT_CLASSES) - ptr);
      continue;
    }
    // Non-ASCII characters come in runs too (words of other scripts): decoded one after another
    // without a trip back through addAscii for each.
    do {
      const decoded = decodeUtf8At(ptr, length, i);
      if (decoded < 0) {
        machine.addInvalid();
        i++;
      } else {
        machine.addCodePoint(decoded & 0x1fffff);
        i += decoded >>> 21;
        i = <i32>(machine.addScriptRun(ptr + <usize>i, ptr + <usize>length) - ptr);
      }
    } while (i < length && load<u8>(ptr + <usize>i) >= 0x80);
  }
}

/**
 * Decodes one multi-byte UTF-8 sequence at `pos` of the `length` bytes at `base` strictly (no
 * overlongs, no surrogates, at most U+10FFFF). Returns the code point in the low 21 bits and the
 * sequence length in the bits above, or -1 when invalid.
 */
// @ts-ignore: decorator
@inline export function decodeUtf8At(base: usize, length: i32, pos: i32): i32 {
  const b0 = <i32>load<u8>(base + <usize>pos);
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    if (pos + 1 >= length) return -1;
    const b1 = <i32>load<u8>(base + <usize>pos + 1);
    if ((b1 & 0xc0) != 0x80) return -1;
    return (2 << 21) | ((b0 & 0x1f) << 6) | (b1 & 0x3f);
  }
  if (b0 >= 0xe0 && b0 <= 0xef) {
    if (pos + 2 >= length) return -1;
    const b1 = <i32>load<u8>(base + <usize>pos + 1);
    const b2 = <i32>load<u8>(base + <usize>pos + 2);
    if ((b1 & 0xc0) != 0x80 || (b2 & 0xc0) != 0x80) return -1;
    if (b0 == 0xe0 && b1 < 0xa0) return -1;
    if (b0 == 0xed && b1 >= 0xa0) return -1;
    return (3 << 21) | ((b0 & 0x0f) << 12) | ((b1 & 0x3f) << 6) | (b2 & 0x3f);
  }
  if (b0 >= 0xf0 && b0 <= 0xf4) {
    if (pos + 3 >= length) return -1;
    const b1 = <i32>load<u8>(base + <usize>pos + 1);
    const b2 = <i32>load<u8>(base + <usize>pos + 2);
    const b3 = <i32>load<u8>(base + <usize>pos + 3);
    if ((b1 & 0xc0) != 0x80 || (b2 & 0xc0) != 0x80 || (b3 & 0xc0) != 0x80) return -1;
    if (b0 == 0xf0 && b1 < 0x90) return -1;
    if (b0 == 0xf4 && b1 >= 0x90) return -1;
    return (4 << 21) | ((b0 & 0x07) << 18) | ((b1 & 0x3f) << 12) | ((b2 & 0x3f) << 6) | (b3 & 0x3f);
  }
  return -1;
}

// One estimator per family for the one-shot functions: module globals are per worker thread in
// Envoy, and a call finishes before the next starts, so reusing them is safe and allocates nothing.
let sharedO200k: TokenEstimator | null = null;
let sharedCl100k: TokenEstimator | null = null;

function sharedEstimator(family: TokenizerFamily): TokenEstimator {
  if (family == TokenizerFamily.CL100K) {
    let estimator = sharedCl100k;
    if (estimator == null) sharedCl100k = estimator = new TokenEstimator(TokenizerFamily.CL100K);
    return estimator;
  }
  let estimator = sharedO200k;
  if (estimator == null) sharedO200k = estimator = new TokenEstimator(TokenizerFamily.O200K);
  return estimator;
}

/** Estimated tokens of UTF-8 text; bytes that are not valid UTF-8 count one token each. */
export function estimateUtf8(bytes: Uint8Array, family: TokenizerFamily): i32 {
  return estimateUtf8At(bytes.dataStart, bytes.length, family);
}

/**
 * The same over `length` bytes at `ptr` in linear memory, for callers that hold raw memory (the
 * Node kernels module); the caller vouches for the range.
 */
export function estimateUtf8At(ptr: usize, length: i32, family: TokenizerFamily): i32 {
  const estimator = sharedEstimator(family);
  estimator.reset();
  estimator.addUtf8At(ptr, length);
  return estimator.tokens();
}
