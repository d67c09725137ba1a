import { asciiLower, sameAsciiText } from "../text/ascii";

describe("asciiLower", () => {
  it("lowers ASCII capitals only", () => {
    expect(asciiLower("Text/Event-Stream; Charset=UTF-8")).toBe("text/event-stream; charset=utf-8");
    expect(asciiLower("X-Tenant-ÉÀ")).toBe("x-tenant-ÉÀ");
    expect(asciiLower("@[`{")).toBe("@[`{");
  });

  it("hands back the same string when there is nothing to lower", () => {
    const text = "identity";
    expect(changetype<usize>(asciiLower(text))).toBe(changetype<usize>(text));
    expect(asciiLower("")).toBe("");
  });

  it("leaves its argument alone", () => {
    const text = "GZIP";
    expect(asciiLower(text)).toBe("gzip");
    expect(text).toBe("GZIP");
  });
});

describe("sameAsciiText", () => {
  it("compares without regard to ASCII case", () => {
    expect(sameAsciiText("Content-Length", "content-length")).toBe(true);
    expect(sameAsciiText("content-length", "content-lengths")).toBe(false);
    expect(sameAsciiText("É", "é")).toBe(false);
  });
});
