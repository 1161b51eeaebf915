# libFuzzer targets of the PEC core (included by tests/fuzz/CMakeLists.txt
# in the -DPEC_FUZZ=ON build).  Seed corpora: tests/fuzz/pec/corpus/<name>/.
foreach(name fuzz_daticert fuzz_pec_verify fuzz_pec_breve fuzz_pec_directory
    fuzz_pec_dirp7m)
  add_executable(${name} ${CMAKE_SOURCE_DIR}/tests/fuzz/pec/${name}.c)
  target_link_libraries(${name} pec)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
endforeach()
# the LDAP StartTLS answer of the directory's TLS probe (pecdir)
add_executable(fuzz_ldap_starttls ${CMAKE_SOURCE_DIR}/tests/fuzz/pec/fuzz_ldap_starttls.c)
target_link_libraries(fuzz_ldap_starttls pecdir)
target_link_options(fuzz_ldap_starttls PRIVATE -fsanitize=fuzzer)
