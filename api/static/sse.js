// The text/event-stream format (Server-Sent Events) as the live events arrive through fetch().
// Pure: text in, events out; tested by node --test.

// Lines of `field: value`, an event per blank line, `:` a comment (the service's ping). push()
// takes text as it arrives, in pieces of any size.
export class EventParser {
  constructor() {
    this.buffer = "";
    this.event = { type: "message", id: null, data: [] };
  }

  // The events completed by `text`: [{type, id, data}] (data: the lines joined by "\n").
  push(text) {
    const out = [];
    this.buffer += text;
    let newline;
    while ((newline = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      // a lone "\r" at the end may be the first half of "\r\n": wait for the next piece
      if (this.buffer[newline] === "\r" && newline === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, newline);
      this.buffer = this.buffer.slice(newline + (this.buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        if (this.event.data.length) {
          out.push({ type: this.event.type, id: this.event.id, data: this.event.data.join("\n") });
        }
        this.event = { type: "message", id: null, data: [] };
        continue;
      }
      if (line.startsWith(":")) continue; // a ping
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") this.event.type = value;
      else if (field === "data") this.event.data.push(value);
      else if (field === "id") this.event.id = value;
    }
    return out;
  }
}
