// Routing decisions as plain functions of the config and what the request says. The stream context
// supplies the request through RequestView and the guards' state through TargetHealth, so tests
// drive every rule without Envoy.
import { bucketOf, mix64, stableHash } from "../text/stable-hash";
import { Rule, RouterConfig, Target, WEIGHT_SCALE } from "./config";

export abstract class RequestView {
  /** A request header's value, null when absent. */
  abstract header(name: string): string | null;
}

export abstract class TargetHealth {
  /** False while the target's guard has tripped; only asked about guarded targets. */
  abstract isOpen(target: Target): bool;
}

export class RouteInput {
  /** The routing header as the client sent it (already removed from the request). */
  clientRoute: string | null = null;
  /** "" when the model is not known. */
  model: string = "";
  /** Entropy for splits without a sticky key; only its bits matter. */
  random: u64 = 0;
}

export enum How {
  /** No rule matched. */
  Default = 0,
  Outright,
  Sticky,
  Random,
  Trusted,
}

export const HOW_NAMES: string[] = ["default", "outright", "sticky", "random", "trusted"];

export class Decision {
  /** Where the request goes. */
  target: Target;
  /** Where the rules sent it; differs from target when that one's guard has tripped. */
  chosen: Target;
  rule: Rule | null = null;
  how: How = How.Default;

  constructor(target: Target) {
    this.target = target;
    this.chosen = target;
  }

  get diverted(): bool {
    return this.target != this.chosen;
  }

  /** For the `llm_mesh.router` filter state and access logs. */
  describe(): string {
    let text = "target=" + this.target.name + " by=" + unchecked(HOW_NAMES[<i32>this.how]);
    const rule = this.rule;
    if (rule != null) text += " rule=" + rule.name;
    if (this.diverted) text += " guarded=" + this.chosen.name;
    return text;
  }
}

/** The bucket (0..9999) a sticky key falls in; the same for every rule, worker and restart. */
export function stickyBucket(key: string): i32 {
  return <i32>bucketOf(stableHash(key), <u32>WEIGHT_SCALE);
}

function ruleMatches(rule: Rule, view: RequestView, model: string): bool {
  for (let i = 0; i < rule.headers.length; i++) {
    const condition = unchecked(rule.headers[i]);
    if (!condition.matches(view.header(condition.name))) return false;
  }
  if (rule.models.length == 0) return true;
  if (model.length == 0) return false;
  for (let i = 0; i < rule.models.length; i++) {
    if (unchecked(rule.models[i]).matches(model)) return true;
  }
  return false;
}

/** The first matching rule decides; a guarded target that has tripped hands its request to the primary. */
export function decide(config: RouterConfig, view: RequestView, input: RouteInput, health: TargetHealth): Decision {
  let decision = new Decision(config.defaultTarget);
  for (let i = 0; i < config.rules.length; i++) {
    const rule = unchecked(config.rules[i]);
    if (!ruleMatches(rule, view, input.model)) continue;
    const picked = pick(config, rule, view, input);
    if (picked == null) continue;
    decision = picked;
    break;
  }
  const chosen = decision.chosen;
  if (chosen.guard != null && !health.isOpen(chosen)) decision.target = config.primary;
  return decision;
}

/** A matched rule's pick; null when it only trusts the client and the client named no known target. */
function pick(config: RouterConfig, rule: Rule, view: RequestView, input: RouteInput): Decision | null {
  const clientRoute = input.clientRoute;
  if (rule.trustClientRoute && clientRoute != null) {
    const named = config.targetNamed(clientRoute);
    if (named != null) return made(named, rule, How.Trusted);
  }
  const target = rule.target;
  if (target != null) return made(target, rule, How.Outright);
  const weights = rule.weights;
  if (weights == null) return null;
  const key = rule.stickyHeader.length > 0 ? view.header(rule.stickyHeader) : null;
  if (key != null && key.length > 0) return made(weights.pick(stickyBucket(key)), rule, How.Sticky);
  return made(weights.pick(<i32>bucketOf(mix64(input.random), <u32>WEIGHT_SCALE)), rule, How.Random);
}

function made(target: Target, rule: Rule, how: How): Decision {
  const decision = new Decision(target);
  decision.rule = rule;
  decision.how = how;
  return decision;
}

export enum Verdict {
  Succeeded = 0,
  Failed,
  /** The client went away before any answer: it says nothing about the target. */
  Unjudged,
}

/**
 * How a finished request reflects on its target: a 5xx (Envoy's own 503 for a reset or refused
 * connection and 504 for a timeout included), an answer the upstream cut off midway, or no
 * response at all fails it. `details` is Envoy's %RESPONSE_CODE_DETAILS%.
 */
export function verdictOf(status: i64, details: string): Verdict {
  if (status >= 500 || details.startsWith("upstream_reset")) return Verdict.Failed;
  if (status > 0) return Verdict.Succeeded;
  return details.startsWith("downstream") ? Verdict.Unjudged : Verdict.Failed;
}
