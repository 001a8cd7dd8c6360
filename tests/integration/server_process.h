#pragma once
// Runs the real `quantserve` binary as a child process on 127.0.0.1 port 0 and finds its gRPC
// and metrics addresses from the startup log line. Stops it with SIGTERM on destruction.

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace quantserve::testing {

class ServerProcess {
 public:
  // Starts `binary` with `args`; waits (up to `timeout`) for the "quantserve listening" line.
  static std::unique_ptr<ServerProcess> Start(const std::string& binary,
                                              std::vector<std::string> args,
                                              std::chrono::seconds timeout = std::chrono::seconds(60)) {
    int fds[2];
    if (::pipe(fds) != 0) return nullptr;
    pid_t pid = ::fork();
    if (pid < 0) return nullptr;
    if (pid == 0) {
      ::dup2(fds[1], STDERR_FILENO);
      ::close(fds[0]);
      ::close(fds[1]);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(binary.c_str()));
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(binary.c_str(), argv.data());
      std::perror("execv");
      ::_exit(127);
    }
    ::close(fds[1]);
    auto p = std::unique_ptr<ServerProcess>(new ServerProcess(pid, fds[0]));
    if (!p->WaitForStartup(timeout)) return nullptr;
    return p;
  }

  ~ServerProcess() {
    Stop();
    if (reader_.joinable()) reader_.join();
  }

  // Sends SIGTERM and waits for exit; returns the exit status (or -1).
  int Stop() {
    if (pid_ <= 0) return exit_status_;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return exit_status_;
  }

  bool Alive() const { return pid_ > 0 && ::kill(pid_, 0) == 0; }
  const std::string& address() const { return address_; }
  const std::string& metrics_address() const { return metrics_address_; }
  // Everything the server logged so far.
  std::string Log() {
    std::lock_guard<std::mutex> lock(mu_);
    return log_;
  }

 private:
  ServerProcess(pid_t pid, int fd) : pid_(pid), fd_(fd) {
    reader_ = std::thread([this] {
      char buf[4096];
      ssize_t n;
      while ((n = ::read(fd_, buf, sizeof(buf))) > 0) {
        std::lock_guard<std::mutex> lock(mu_);
        log_.append(buf, static_cast<size_t>(n));
        // Forward the server's log to the test's output to ease debugging.
        std::fwrite(buf, 1, static_cast<size_t>(n), stderr);
      }
      ::close(fd_);
    });
  }

  static std::string Field(const std::string& line, const std::string& key) {
    size_t at = line.find(" " + key + "=");
    if (at == std::string::npos) return "";
    size_t begin = at + key.size() + 2;
    size_t end = line.find_first_of(" \n", begin);
    return line.substr(begin, end - begin);
  }

  bool WaitForStartup(std::chrono::seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        size_t at = log_.find("msg=\"quantserve listening\"");
        if (at != std::string::npos) {
          size_t end = log_.find('\n', at);
          if (end != std::string::npos) {
            std::string line = log_.substr(at, end - at);
            address_ = Field(line, "address");
            std::string metrics = Field(line, "metrics");
            if (size_t slash = metrics.find('/'); slash != std::string::npos) {
              metrics = metrics.substr(0, slash);
            }
            metrics_address_ = metrics;
            return !address_.empty();
          }
        }
      }
      if (!Alive()) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  pid_t pid_;
  int fd_;
  int exit_status_ = -1;
  std::thread reader_;
  std::mutex mu_;
  std::string log_;
  std::string address_;
  std::string metrics_address_;
};

// A plain HTTP/1.0 GET on host:port (the metrics endpoint), returning the body ("" on error).
std::string HttpGet(const std::string& host_port, const std::string& path);

}  // namespace quantserve::testing
