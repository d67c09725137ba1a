// Model names in configs: exact ("gpt-4o") or a prefix ending in "*" ("llama-3-*"). Lookups
// prefer an exact name, then the longest prefix, so a specific entry always beats a family.

export class ModelPattern {
  constructor(public text: string, public prefix: bool) {}

  /** Null when the name has a "*" anywhere but at the end. */
  static parse(name: string): ModelPattern | null {
    const star = name.indexOf("*");
    if (star < 0) return new ModelPattern(name, false);
    if (star != name.length - 1) return null;
    return new ModelPattern(name.slice(0, star), true);
  }

  matches(model: string): bool {
    return this.prefix ? model.startsWith(this.text) : model == this.text;
  }
}

export class ModelTable<T> {
  patterns: ModelPattern[] = [];
  values: T[] = [];

  get size(): i32 {
    return this.patterns.length;
  }

  names(): string[] {
    const out = new Array<string>(this.patterns.length);
    for (let i = 0; i < this.patterns.length; i++) {
      const pattern = unchecked(this.patterns[i]);
      unchecked((out[i] = pattern.prefix ? pattern.text + "*" : pattern.text));
    }
    return out;
  }

  add(pattern: ModelPattern, value: T): void {
    this.patterns.push(pattern);
    this.values.push(value);
  }

  /** The value for a model, or null when no pattern matches. */
  find(model: string): T | null {
    let best = -1;
    let bestLength = -1;
    for (let i = 0; i < this.patterns.length; i++) {
      const pattern = unchecked(this.patterns[i]);
      if (!pattern.matches(model)) continue;
      if (!pattern.prefix) return unchecked(this.values[i]);
      if (pattern.text.length > bestLength) {
        best = i;
        bestLength = pattern.text.length;
      }
    }
    return best >= 0 ? unchecked(this.values[best]) : null;
  }
}
