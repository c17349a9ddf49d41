#include "client/job_watch.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/str_format.h"
#include "client/render.h"

namespace qatd::client {
namespace {

int TerminalColumns() {
  winsize size{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 20) return size.ws_col;
  return 100;
}

Color LevelColor(v1::LogLevel level) {
  switch (level) {
    case v1::LOG_LEVEL_WARNING:
      return Color::kYellow;
    case v1::LOG_LEVEL_ERROR:
      return Color::kRed;
    case v1::LOG_LEVEL_DEBUG:
      return Color::kDim;
    default:
      return Color::kNone;
  }
}

std::string ErrorText(const v1::JobError& error) {
  if (error.code() == 0 && error.message().empty()) return "";
  return StatusCodeName(static_cast<grpc::StatusCode>(error.code())) + ": " + error.message();
}

// What the progress line shows: the latest progress, losses and throughput.
class JobStatusLine {
 public:
  void OnProgress(const v1::JobEvent& event) {
    progress_ = event.progress();
    const double t = ToSeconds(event.time());
    if (first_time_ < 0 || progress_.done() < first_done_) {
      first_time_ = t;
      first_done_ = progress_.done();
    }
    last_time_ = t;
  }
  void OnMetric(const v1::MetricPoint& m) { metrics_[m.name()] = m.value(); }
  bool has_progress() const { return progress_.done() > 0 || progress_.total() > 0; }
  bool complete() const { return progress_.total() > 0 && progress_.done() >= progress_.total(); }

  std::string Render(bool tty, bool utf8) const {
    std::string line;
    if (tty && progress_.total() > 0) line += ProgressBar(progress_.done(), progress_.total(), 28, utf8) + " ";
    line += FormatProgress(progress_);
    if (const auto loss = Loss()) line += absl::StrFormat("  %s %s", loss->first, FormatNumber(loss->second));
    if (auto it = metrics_.find("eval/kd"); it != metrics_.end() && (!Loss() || Loss()->first != "eval/kd")) {
      line += "  eval/kd " + FormatNumber(it->second);
    }
    if (const double tps = TokensPerSecond(); tps > 0) {
      line += absl::StrFormat("  %s tok/s", FormatNumber(tps));
    } else if (progress_.rate() > 0) {
      line += absl::StrFormat("  %s %s/s", FormatNumber(progress_.rate()), progress_.unit());
    }
    if (const double eta = Eta(); eta >= 0 && progress_.done() < progress_.total())
      line += "  ETA " + FormatDuration(eta);
    return line;
  }

 private:
  std::optional<std::pair<std::string, double>> Loss() const {
    for (const char* name : {"loss/kd", "loss", "loss/total"}) {
      if (auto it = metrics_.find(name); it != metrics_.end()) return *it;
    }
    for (const auto& [name, value] : metrics_) {
      if (name.rfind("loss/", 0) == 0) return std::make_pair(name, value);
    }
    return std::nullopt;
  }
  double TokensPerSecond() const {
    if (auto it = metrics_.find("tokens_per_second"); it != metrics_.end()) return it->second;
    if (progress_.unit() == "tokens") return progress_.rate();
    return 0;
  }
  // The job's estimate, else one from its rate, else from the event times seen so far.
  double Eta() const {
    if (progress_.total() <= 0) return -1;
    const double left = static_cast<double>(progress_.total() - progress_.done());
    if (progress_.eta_s() >= 0 && (progress_.eta_s() > 0 || progress_.rate() > 0)) return progress_.eta_s();
    if (progress_.rate() > 0) return left / progress_.rate();
    const double elapsed = last_time_ - first_time_;
    const double done = static_cast<double>(progress_.done() - first_done_);
    if (elapsed > 0 && done > 0) return left * elapsed / done;
    return -1;
  }

  v1::Progress progress_;
  std::map<std::string, double> metrics_;
  double first_time_ = -1, last_time_ = -1;
  int64_t first_done_ = 0;
};

class WatchPrinter {
 public:
  WatchPrinter(int64_t job_id, const WatchOptions& o) : job_id_(job_id), o_(o), columns_(TerminalColumns()) {}

  void Event(const v1::JobEvent& event) {
    switch (event.event_case()) {
      case v1::JobEvent::kState: {
        const v1::StateChange& s = event.state();
        if (IsTerminal(s.to())) {  // WatchJob's summary line reports the end
          Finish();
          break;
        }
        std::string text =
            absl::StrFormat("job %d: %s", job_id_, Paint(StateName(s.to()), StateColor(s.to()), o_.color));
        if (!s.reason().empty()) text += " (" + s.reason() + ")";
        if (const std::string error = ErrorText(s.error()); !error.empty()) text += ": " + error;
        Line(text);
        break;
      }
      case v1::JobEvent::kProgress:
        status_.OnProgress(event);
        progress_dirty_ = true;
        MaybePrintProgress(false);
        break;
      case v1::JobEvent::kMetric:
        status_.OnMetric(event.metric());
        if (event.metric().name().rfind("eval/", 0) == 0) {
          Line(absl::StrFormat("step %d: %s %s", event.metric().step(), event.metric().name(),
                               FormatNumber(event.metric().value())));
        }
        progress_dirty_ = true;
        MaybePrintProgress(false);
        break;
      case v1::JobEvent::kLog:
        Line(Paint(LevelName(event.log().level()), LevelColor(event.log().level()), o_.color) + " " +
             event.log().message());
        break;
      case v1::JobEvent::kArtifact: {
        const v1::Artifact& a = event.artifact();
        Line(absl::StrFormat("artifact %s: %s (%s)", a.kind(), a.path(), FormatBytes(a.size_bytes())));
        break;
      }
      case v1::JobEvent::kText:
        Text(event.text().text());
        break;
      case v1::JobEvent::EVENT_NOT_SET:
        break;
    }
  }

  // Before the summary: the last progress line (plain mode) or a newline after the bar.
  void Finish() {
    EndText();
    if (o_.tty) {
      if (bar_shown_) {
        std::printf("\r\033[K%s%s\n", o_.prefix.c_str(), status_.Render(true, o_.utf8).c_str());
        bar_shown_ = false;
      }
    } else {
      MaybePrintProgress(true);
    }
    std::fflush(stdout);
  }

  void Line(const std::string& text) {
    EndText();
    if (o_.tty && bar_shown_) std::printf("\r\033[K");
    std::printf("%s%s\n", o_.prefix.c_str(), text.c_str());
    if (o_.tty && bar_shown_) DrawBar();
    std::fflush(stdout);
  }

 private:
  // Generated text (GENERATE jobs) flows inline after one "text: " label.
  void Text(const std::string& piece) {
    if (!in_text_) {
      if (o_.tty && bar_shown_) std::printf("\r\033[K");
      bar_shown_ = false;
      std::printf("%stext: ", o_.prefix.c_str());
      in_text_ = true;
    }
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  }
  void EndText() {
    if (!in_text_) return;
    std::printf("\n");
    in_text_ = false;
  }

  void MaybePrintProgress(bool final) {
    if (!status_.has_progress() || !progress_dirty_) return;
    const auto now = std::chrono::steady_clock::now();
    if (o_.tty) {
      if (now - last_draw_ < std::chrono::milliseconds(100) && !final) return;
      DrawBar();
      last_draw_ = now;
      return;
    }
    if (!final && now - last_draw_ < std::chrono::seconds(1)) return;
    // The 100% line is printed once, by Finish(), with the metrics that came after the last
    // step (issue #17: it used to print up to three times).
    if (status_.complete() && (!final || complete_printed_)) return;
    std::printf("%s%s\n", o_.prefix.c_str(), status_.Render(false, false).c_str());
    std::fflush(stdout);
    last_draw_ = now;
    progress_dirty_ = false;
    complete_printed_ = status_.complete();
  }

  void DrawBar() {
    std::string text = o_.prefix + status_.Render(true, o_.utf8);
    if (VisibleWidth(text) >= static_cast<size_t>(columns_)) text = text.substr(0, columns_ - 1);
    std::printf("\r\033[K%s", text.c_str());
    std::fflush(stdout);
    bar_shown_ = true;
    progress_dirty_ = false;
  }

  int64_t job_id_;
  WatchOptions o_;
  int columns_;
  JobStatusLine status_;
  bool progress_dirty_ = false;
  bool bar_shown_ = false;
  bool in_text_ = false;
  bool complete_printed_ = false;  // plain mode: the 100% line is out
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace

std::string LevelName(v1::LogLevel level) {
  switch (level) {
    case v1::LOG_LEVEL_DEBUG:
      return "DEBUG";
    case v1::LOG_LEVEL_WARNING:
      return "WARN";
    case v1::LOG_LEVEL_ERROR:
      return "ERROR";
    default:
      return "INFO";
  }
}

WatchResult WatchJob(Connection& connection, int64_t job_id, const WatchOptions& options) {
  WatchResult result;
  v1::WatchJobRequest request;
  request.set_job_id(job_id);
  auto context = connection.StreamContext();
  auto reader = connection.stub().WatchJob(context.get(), request);
  WatchPrinter printer(job_id, options);
  v1::JobEvent event;
  while (reader->Read(&event)) {
    if (event.has_state()) {
      result.state = event.state().to();
      result.error = event.state().error();
    }
    if (options.json) {
      std::printf("%s\n", ToJson(event, false).c_str());
      std::fflush(stdout);
    } else {
      printer.Event(event);
    }
  }
  const grpc::Status status = reader->Finish();
  if (!options.json) printer.Finish();
  if (!status.ok()) {
    result.exit_code = connection.Report(status);
    return result;
  }
  if (!IsTerminal(result.state)) {  // the stream ends only after the terminal state; be safe
    v1::GetJobRequest get;
    get.set_job_id(job_id);
    v1::Job job;
    const grpc::Status s = connection.stub().GetJob(connection.UnaryContext().get(), get, &job);
    if (!s.ok()) {
      result.exit_code = connection.Report(s);
      return result;
    }
    result.state = job.state();
    result.error = job.error();
  }
  if (!options.json) {
    std::string summary = absl::StrFormat("%sjob %d %s", options.prefix, job_id,
                                          Paint(StateName(result.state), StateColor(result.state), options.color));
    if (const std::string error = ErrorText(result.error); !error.empty()) summary += ": " + error;
    std::printf("%s\n", summary.c_str());
    std::fflush(stdout);
  }
  result.exit_code = result.state == v1::JOB_STATE_SUCCEEDED ? kExitOk : kExitFailed;
  return result;
}

namespace {

void PrintLogLine(const v1::JobEvent& event, const LogsOptions& o) {
  if (o.json) {
    std::printf("%s\n", ToJson(event, false).c_str());
  } else if (event.has_log()) {
    std::printf("%s %s %s\n", FormatTime(event.time()).c_str(),
                Paint(absl::StrFormat("%-5s", LevelName(event.log().level())), LevelColor(event.log().level()), o.color)
                    .c_str(),
                event.log().message().c_str());
  }
  std::fflush(stdout);
}

}  // namespace

int PrintLogs(Connection& connection, int64_t job_id, const LogsOptions& o) {
  v1::WatchJobRequest request;
  request.set_job_id(job_id);
  auto context = connection.StreamContext();
  const double opened = NowSeconds();
  auto reader = connection.stub().WatchJob(context.get(), request);
  if (o.follow) {
    v1::JobEvent event;
    while (reader->Read(&event)) {
      if (event.has_log() || o.json) PrintLogLine(event, o);
    }
    return connection.Report(reader->Finish());
  }

  // Read on a thread so that a quiet stream can be noticed; the main thread decides when the
  // replay has caught up and cancels the call.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<v1::JobEvent> queue;
  bool ended = false;
  std::thread thread([&] {
    v1::JobEvent event;
    while (reader->Read(&event)) {
      std::lock_guard<std::mutex> lock(mu);
      queue.push_back(event);
      cv.notify_one();
    }
    std::lock_guard<std::mutex> lock(mu);
    ended = true;
    cv.notify_one();
  });
  bool seen_any = false;
  bool cancelled = false;
  std::unique_lock<std::mutex> lock(mu);
  while (true) {
    const auto wait = std::chrono::milliseconds(seen_any ? o.idle_ms : o.first_event_ms);
    if (!cv.wait_for(lock, wait, [&] { return !queue.empty() || ended; })) {
      cancelled = true;  // (d) quiet: the replay is over
      break;
    }
    if (queue.empty()) break;  // (a) the stream ended
    v1::JobEvent event = std::move(queue.front());
    queue.pop_front();
    seen_any = true;
    if (event.seq() == 0 || ToSeconds(event.time()) > opened) {  // (b), (c): live events
      cancelled = true;
      break;
    }
    if (event.has_log() || o.json) {
      lock.unlock();
      PrintLogLine(event, o);
      lock.lock();
    }
  }
  lock.unlock();
  if (cancelled) context->TryCancel();
  thread.join();
  const grpc::Status status = reader->Finish();
  if (cancelled && status.error_code() == grpc::StatusCode::CANCELLED) return kExitOk;
  return connection.Report(status);
}

}  // namespace qatd::client
