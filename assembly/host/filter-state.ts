// Filter state this VM set on a stream, kept until the stream is deleted: a reader in the same VM (a
// filter reading what it set, or in the one-module build every stage after the one that set it)
// needs no host call. Names registered with keepFilterStateInVm are never handed to the host at
// all: the one-module build's hand-overs between its stages, which nothing outside reads. Names
// registered with readFilterStateInVm are handed to it (for access logs) but never asked of it:
// in the one-module build only its own stages set them.
import { currentContext, propertyString } from "./callback-cache";
import { ContextTable } from "./context-table";
import * as imports from "./imports";
import { OK, utf8 } from "./calls";

class StreamFilterState {
  names: string[] = [];
  values: string[] = [];

  constructor(public contextId: u32) {}

  set(name: string, value: string): void {
    const at = this.names.indexOf(name);
    if (at >= 0) unchecked((this.values[at] = value));
    else {
      this.names.push(name);
      this.values.push(value);
    }
  }

  get(name: string): string | null {
    const at = this.names.indexOf(name);
    return at >= 0 ? unchecked(this.values[at]) : null;
  }
}

const filterStateSetHere = new ContextTable<StreamFilterState>();
const filterStateKeptInVm = new Array<string>();
const filterStateReadInVm = new Array<string>();

/** Filter state names that stay in this VM: only stages of the same module read them. */
export function keepFilterStateInVm(names: string[]): void {
  for (let i = 0; i < names.length; i++) filterStateKeptInVm.push(unchecked(names[i]));
}

/** Filter state names only this module's stages set: one this VM did not set is not set at all. */
export function readFilterStateInVm(names: string[]): void {
  for (let i = 0; i < names.length; i++) filterStateReadInVm.push(unchecked(names[i]));
}

/** Forgets what a deleted stream set (abi.ts, on proxy_on_delete). */
export function forgetStream(contextId: u32): void {
  filterStateSetHere.remove(contextId);
}

/**
 * Stores a value in the stream's filter state; Envoy keeps it as `wasm.<name>`, readable by later
 * Wasm filters with `filterState(name)` and by access logs with %FILTER_STATE(wasm.<name>:PLAIN)%.
 * With `toHost` false (a filter's `filter_state: false`) only this VM keeps it: the later stages of
 * the one module still read it, and nothing outside does, for one host call less.
 */
export function setFilterState(name: string, value: string, toHost: bool = true): bool {
  let mine = filterStateSetHere.get(currentContext());
  if (mine == null) {
    mine = new StreamFilterState(currentContext());
    filterStateSetHere.add(mine);
  }
  mine.set(name, value);
  if (!toHost || filterStateKeptInVm.includes(name)) return true;
  const path = utf8(name);
  const bytes = utf8(value);
  return imports.proxy_set_property(changetype<usize>(path), path.byteLength, changetype<usize>(bytes), bytes.byteLength) == OK;
}

export function filterState(name: string): string | null {
  const mine = filterStateSetHere.get(currentContext());
  if (mine != null) {
    const value = mine.get(name);
    if (value != null) return value;
  }
  if (filterStateKeptInVm.includes(name) || filterStateReadInVm.includes(name)) return null;
  return propertyString([name]);
}
