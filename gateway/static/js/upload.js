// One photo or video on its way: uploaded with XMLHttpRequest (fetch has no upload
// progress), then processed by the server. The Idempotency-Key is made once per file, so a
// retry after a failure never stores the file twice (protocol.md §1.3a).
import { api, session } from "./api.js";
import { uuid } from "./dom.js";

const POLL_MS = 2000;

export class Upload extends EventTarget {
  constructor(file, channel, live) {
    super();
    this.file = file;
    this.channel = channel;
    this.live = live;
    this.key = uuid();
    this.state = "queued"; // uploading → processing → ready | failed
    this.progress = 0;
    this.id = null;
    this.code = null;
    this.retriable = false;
    this.xhr = null;
    this.timer = null;
    this.onMedia = (event) => {
      if (event.detail.id === this.id && this.state === "processing") this.settle(event.detail);
    };
    live.addEventListener("media", this.onMedia);
  }

  changed() {
    this.dispatchEvent(new Event("change"));
  }

  start() {
    clearTimeout(this.timer);
    this.state = "uploading";
    this.progress = 0;
    this.code = null;
    this.changed();
    const xhr = new XMLHttpRequest();
    this.xhr = xhr;
    xhr.open("POST", `/api/media?channel=${encodeURIComponent(this.channel)}`);
    xhr.setRequestHeader("Authorization", `Bearer ${session.token}`);
    xhr.setRequestHeader("Idempotency-Key", this.key);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      this.progress = event.loaded / event.total;
      this.changed();
    });
    xhr.addEventListener("load", () => {
      const reply = xhr.response ?? {};
      if (xhr.status === 200 || xhr.status === 202) {
        this.id = reply.id;
        this.progress = 1;
        this.settle(reply);
      } else {
        // 4xx answers are final (type, size, rights); others may pass on a retry.
        this.fail(reply.code || `http_${xhr.status}`, xhr.status >= 500 || xhr.status === 429);
      }
    });
    xhr.addEventListener("error", () => this.fail("network", true));
    xhr.addEventListener("abort", () => this.fail("aborted", true));
    const form = new FormData();
    form.append("file", this.file);
    xhr.send(form);
  }

  // From the upload's answer, the `media` event on user:<id>, or a status poll: the event
  // is transient, so polling covers a connection that was away at that moment.
  settle(status) {
    if (status.state === "ready") {
      this.state = "ready";
      clearTimeout(this.timer);
      this.changed();
    } else if (status.state === "rejected") {
      this.fail(status.code || "media_unreadable", false);
    } else {
      this.state = "processing";
      this.changed();
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.poll(), POLL_MS);
    }
  }

  async poll() {
    if (this.state !== "processing") return;
    try {
      this.settle(await api("GET", `/api/media/${encodeURIComponent(this.id)}/status`));
    } catch {
      this.timer = setTimeout(() => this.poll(), POLL_MS * 2);
    }
  }

  fail(code, retriable) {
    clearTimeout(this.timer);
    this.state = "failed";
    this.code = code;
    this.retriable = retriable;
    this.changed();
  }

  dispose() {
    clearTimeout(this.timer);
    this.live.removeEventListener("media", this.onMedia);
    if (this.state === "uploading") this.xhr?.abort();
  }
}
