#include "testing/certs.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

namespace kvroute::testing {

namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "testing/certs: %s failed\n", what);
  std::abort();
}

EVP_PKEY* new_key() {
  EVP_PKEY* k = EVP_EC_gen("P-256");
  if (k == nullptr) die("EVP_EC_gen");
  return k;
}

std::string pem_of(X509* x) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, x);
  char* data = nullptr;
  const long n = BIO_get_mem_data(b, &data);
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(b);
  return out;
}

std::string pem_of(EVP_PKEY* k) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(b, &data);
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(b);
  return out;
}

void add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) die("X509V3_EXT_conf_nid");
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

X509* new_cert(EVP_PKEY* key, const std::string& cn, long serial, std::chrono::seconds from,
               std::chrono::seconds to) {
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), static_cast<long>(from.count()));
  X509_gmtime_adj(X509_getm_notAfter(x), static_cast<long>(to.count()));
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  return x;
}

}  // namespace

struct TestCa::Impl {
  EVP_PKEY* key = nullptr;
  X509* cert = nullptr;
  long next_serial = 2;
  ~Impl() {
    X509_free(cert);
    EVP_PKEY_free(key);
  }
};

TestCa::TestCa() : impl_(std::make_unique<Impl>()) {}
TestCa::TestCa(TestCa&&) noexcept = default;
TestCa& TestCa::operator=(TestCa&&) noexcept = default;
TestCa::~TestCa() = default;

TestCa TestCa::create(const std::string& common_name) {
  TestCa ca;
  ca.impl_->key = new_key();
  X509* x =
      new_cert(ca.impl_->key, common_name, 1, std::chrono::hours(-1), std::chrono::hours(24 * 30));
  X509_set_issuer_name(x, X509_get_subject_name(x));
  add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
  add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
  add_ext(x, x, NID_subject_key_identifier, "hash");
  if (X509_sign(x, ca.impl_->key, EVP_sha256()) == 0) die("X509_sign (CA)");
  ca.impl_->cert = x;
  ca.self_ = {pem_of(x), pem_of(ca.impl_->key)};
  return ca;
}

CertKey TestCa::issue(const std::string& common_name, const std::vector<std::string>& sans,
                      std::chrono::seconds not_before, std::chrono::seconds not_after) const {
  EVP_PKEY* key = new_key();
  X509* x = new_cert(key, common_name, impl_->next_serial++, not_before, not_after);
  X509_set_issuer_name(x, X509_get_subject_name(impl_->cert));
  add_ext(x, impl_->cert, NID_basic_constraints, "critical,CA:FALSE");
  add_ext(x, impl_->cert, NID_key_usage, "critical,digitalSignature,keyEncipherment");
  add_ext(x, impl_->cert, NID_ext_key_usage, "serverAuth,clientAuth");
  add_ext(x, impl_->cert, NID_authority_key_identifier, "keyid:always");
  if (!sans.empty()) {
    std::string list;
    for (const auto& s : sans) list += (list.empty() ? "" : ",") + s;
    add_ext(x, impl_->cert, NID_subject_alt_name, list);
  }
  if (X509_sign(x, impl_->key, EVP_sha256()) == 0) die("X509_sign (leaf)");
  CertKey out{pem_of(x), pem_of(key)};
  X509_free(x);
  EVP_PKEY_free(key);
  return out;
}

void write_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << text;
    if (!f) die("writing a file");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) die("renaming a file");
}

}  // namespace kvroute::testing
